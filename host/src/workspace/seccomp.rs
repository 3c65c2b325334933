//! The system calls a workspace command is refused: what agents never need and what a sandbox
//! escape or an attack on the kernel usually starts with. Modelled on what mature sandboxes
//! refuse (Docker's default profile, Flatpak, bubblewrap's examples), as a deny list: build
//! tools, interpreters and debuggers keep working, and a refused call fails with `EPERM` (or
//! `ENOSYS` for `clone3`, so that libc falls back to `clone`, whose flags can be checked).
//!
//! The filter is compiled once, when the sandbox is probed, and handed to bubblewrap
//! (`--add-seccomp-fd FD`, one per program), which installs them right before running the command, after setting up the
//! sandbox's own mounts.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

/// Refused outright, with `EPERM`.
const REFUSED: &[(&str, i64)] = &[
    // Kernel keyrings: not namespaced, shared with the host's users.
    ("add_key", libc::SYS_add_key),
    ("keyctl", libc::SYS_keyctl),
    ("request_key", libc::SYS_request_key),
    // Kernel modules and replacing the kernel.
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("reboot", libc::SYS_reboot),
    // Mounts (the sandbox's are made before the filter applies) and new root folders.
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("chroot", libc::SYS_chroot),
    ("open_tree", libc::SYS_open_tree),
    ("move_mount", libc::SYS_move_mount),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("mount_setattr", libc::SYS_mount_setattr),
    // Namespaces: joining another, or making new ones (`clone` is checked below).
    ("setns", libc::SYS_setns),
    ("unshare", libc::SYS_unshare),
    // Tracing and profiling the kernel: large attack surface, and a way to read others' data.
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("lookup_dcookie", libc::SYS_lookup_dcookie),
    ("syslog", libc::SYS_syslog),
    ("fanotify_init", libc::SYS_fanotify_init),
    // io_uring bypasses the checks made on ordinary system calls (and this filter).
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    // Files by handle: opens any file of a mounted filesystem, whatever folder it is in.
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    // The machine's clock, swap, accounting and quotas.
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("adjtimex", libc::SYS_adjtimex),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("acct", libc::SYS_acct),
    ("quotactl", libc::SYS_quotactl),
    // Old interfaces nothing modern needs.
    ("uselib", libc::SYS_uselib),
    ("vhangup", libc::SYS_vhangup),
    #[cfg(target_arch = "x86_64")]
    ("iopl", libc::SYS_iopl),
    #[cfg(target_arch = "x86_64")]
    ("ioperm", libc::SYS_ioperm),
];

/// Namespace flags a `clone` may not carry.
const NEW_NAMESPACES: u64 = (libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP) as u64;

/// Terminal requests that push input into another program's terminal.
const TERMINAL_INJECTION: &[u64] = &[libc::TIOCSTI, libc::TIOCLINUX];

/// The names of the refused system calls, for the documentation and the start-up log.
pub fn refused_names() -> Vec<&'static str> {
    let mut names: Vec<&str> = REFUSED.iter().map(|(name, _)| *name).collect();
    names.extend(["clone (with namespace flags)", "clone3", "ioctl TIOCSTI/TIOCLINUX", "every x32 system call"]);
    names
}

/// The filters as bubblewrap reads them: each a BPF program's instructions, in the machine's
/// byte order. Two programs, since one program has one action for what it matches.
pub fn compiled() -> Result<Vec<Vec<u8>>, String> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| format!("no seccomp filter for this processor: {e:?}"))?;
    let eperm = SeccompAction::Errno(libc::EPERM as u32);
    let mut refused: BTreeMap<i64, Vec<SeccompRule>> =
        REFUSED.iter().map(|(_, number)| (*number, Vec::new())).collect();
    let namespace_flag = |flag: u64| -> Result<SeccompRule, String> {
        // `clone`'s flags are its first argument on every architecture Toolhost runs on.
        let condition = SeccompCondition::new(0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(flag), flag)
            .map_err(|e| e.to_string())?;
        SeccompRule::new(vec![condition]).map_err(|e| e.to_string())
    };
    let mut clone_rules = Vec::new();
    for bit in 0..64 {
        let flag = 1u64 << bit;
        if NEW_NAMESPACES & flag != 0 {
            clone_rules.push(namespace_flag(flag)?);
        }
    }
    refused.insert(libc::SYS_clone, clone_rules);
    let mut ioctl_rules = Vec::new();
    for request in TERMINAL_INJECTION {
        let condition =
            SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, *request).map_err(|e| e.to_string())?;
        ioctl_rules.push(SeccompRule::new(vec![condition]).map_err(|e| e.to_string())?);
    }
    refused.insert(libc::SYS_ioctl, ioctl_rules);
    let main = SeccompFilter::new(refused, SeccompAction::Allow, eperm, arch).map_err(|e| e.to_string())?;
    // clone3 passes its flags in memory, where a filter cannot look: refuse it as unknown, and
    // libc uses clone instead.
    let clone3 = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(|e| e.to_string())?;
    let mut programs = Vec::new();
    #[cfg(target_arch = "x86_64")]
    programs.push(no_x32());
    for filter in [main, clone3] {
        let program: BpfProgram = filter.try_into().map_err(|e: seccompiler::BackendError| e.to_string())?;
        programs.push(as_bytes(program.iter().map(|i| (i.code, i.jt, i.jf, i.k))));
    }
    Ok(programs)
}

/// Refuses x32 system calls (numbers with bit 30 set, on x86_64's own audit architecture): a
/// deny list keyed by x86_64 numbers would let `keyctl | 0x40000000` through otherwise.
#[cfg(target_arch = "x86_64")]
fn no_x32() -> Vec<u8> {
    const LOAD_WORD: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JUMP_IF_EQUAL: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const JUMP_IF_AT_LEAST: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
    const RETURN: u16 = 0x06; // BPF_RET | BPF_K
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    const ALLOW: u32 = 0x7fff_0000;
    const ERRNO: u32 = 0x0005_0000;
    // (code, jump if true, jump if false, value); jumps count the instructions skipped.
    let program: [(u16, u8, u8, u32); 6] = [
        (LOAD_WORD, 0, 0, 4),                      // the architecture
        (JUMP_IF_EQUAL, 0, 3, AUDIT_ARCH_X86_64),  // others: left to the other filters
        (LOAD_WORD, 0, 0, 0),                      // the system call's number
        (JUMP_IF_AT_LEAST, 0, 1, X32_SYSCALL_BIT), // x32: refused
        (RETURN, 0, 0, ERRNO | libc::EPERM as u32),
        (RETURN, 0, 0, ALLOW),
    ];
    as_bytes(program)
}

/// A BPF program as the kernel (and bubblewrap) read it: `struct sock_filter` after
/// `struct sock_filter`, in the machine's byte order.
fn as_bytes(instructions: impl IntoIterator<Item = (u16, u8, u8, u32)>) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (code, jt, jf, k) in instructions {
        bytes.extend_from_slice(&code.to_ne_bytes());
        bytes.push(jt);
        bytes.push(jf);
        bytes.extend_from_slice(&k.to_ne_bytes());
    }
    bytes
}
