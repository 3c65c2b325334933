//! What every command may use: the limits an admin sets, and the rlimits they become.

use super::*;

/// Limits on every command; each process inside gets them, the disk quota applies to the whole
/// workspace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommandLimits {
    /// CPU seconds per process.
    pub cpu_seconds: u64,
    /// Address space per process.
    pub memory_mib: u64,
    /// Processes (and threads) at once inside one sandbox.
    pub processes: u64,
    /// Largest file a command may write.
    pub file_size_mib: u64,
    /// Size of the private `/tmp`.
    pub tmp_mib: u64,
    /// Everything in the workspace (files and home); a command that grows it past this is
    /// stopped.
    pub disk_mib: u64,
    /// Files and folders in the workspace (empty files take no space, but inodes all the same).
    pub files: u64,
    /// Output kept per command (the first and last halves; the middle is counted, not kept).
    pub output_kib: u64,
}

impl Default for CommandLimits {
    fn default() -> CommandLimits {
        CommandLimits {
            cpu_seconds: 600,
            memory_mib: 4096,
            processes: 256,
            file_size_mib: 1024,
            tmp_mib: 512,
            disk_mib: 4096,
            files: 500_000,
            output_kib: 1024,
        }
    }
}

impl CommandLimits {
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("cpu_seconds", self.cpu_seconds),
            ("memory_mib", self.memory_mib),
            ("processes", self.processes),
            ("file_size_mib", self.file_size_mib),
            ("tmp_mib", self.tmp_mib),
            ("disk_mib", self.disk_mib),
            ("files", self.files),
            ("output_kib", self.output_kib),
        ] {
            if value == 0 {
                return Err(format!("[workspaces.limits] {name} must be at least 1"));
            }
        }
        if self.processes < 8 {
            return Err("[workspaces.limits] processes must be at least 8 (a shell and a pipe need a few)".into());
        }
        Ok(())
    }
}

/// The rlimits for a command: CPU time, file size and no core dumps always; memory and
/// processes only when no control group bounds them (see the module's comment). The process
/// count is per user: it is set unless the command stays root (`runs_as_root`), where it would
/// count every root process on the machine. A root server's commands run as the sandbox's own
/// user, so there it bounds all workspaces' commands together, which still keeps a fork bomb
/// from the rest of the machine.
pub(super) fn rlimits(
    limits: &CommandLimits,
    in_group: bool,
    runs_as_root: bool,
) -> Vec<(rustix::process::Resource, u64)> {
    use rustix::process::Resource;
    let mib = 1024 * 1024;
    let mut set =
        vec![(Resource::Cpu, limits.cpu_seconds), (Resource::Fsize, limits.file_size_mib * mib), (Resource::Core, 0)];
    if !in_group {
        set.push((Resource::As, limits.memory_mib * mib));
        if !runs_as_root {
            set.push((Resource::Nproc, limits.processes));
        }
    }
    set
}

pub(super) fn apply_limits(limits: &[(rustix::process::Resource, u64)]) -> std::io::Result<()> {
    use rustix::process::{Rlimit, setrlimit};
    for (resource, value) in limits {
        setrlimit(*resource, Rlimit { current: Some(*value), maximum: Some(*value) }).map_err(std::io::Error::from)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::process::Resource;

    fn bounds_processes(set: &[(Resource, u64)]) -> bool {
        set.iter().any(|(resource, _)| *resource == Resource::Nproc)
    }

    #[test]
    fn without_a_control_group_processes_are_bounded_unless_the_command_stays_root() {
        let limits = CommandLimits::default();
        assert!(bounds_processes(&rlimits(&limits, false, false)), "the sandbox's own user gets RLIMIT_NPROC");
        assert!(!bounds_processes(&rlimits(&limits, false, true)), "root's would count every root process");
        assert!(!bounds_processes(&rlimits(&limits, true, false)), "a control group bounds them instead");
        assert!(rlimits(&limits, true, true).iter().any(|(r, _)| *r == Resource::Cpu), "CPU time always");
    }
}
