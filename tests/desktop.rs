//! The desktop beside a workspace, on a real X server (TigerVNC's Xvnc) in the workspace's
//! sandbox: what its programs draw reaches screenshots, input lands on the exact real pixel the
//! model's (scaled) coordinates name, it ends with its workspace, and it holds against hostile
//! input and programs. Test programs are the X utilities Debian ships: `xsetroot` paints the
//! screen, `xev` reports where it was clicked and which keys it got.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::sync::Arc;
use std::time::Duration;

use toolhost::store::{Store, Workspace};
use toolhost::workspace::desktop::Desktop;
use toolhost::workspace::desktop::display::Button;
use toolhost::workspace::desktop::picture::Format;
use toolhost::workspace::sandbox::{CommandLimits, CommandSpec};
use toolhost::workspace::{CreateRequest, WorkspaceError, WorkspaceService, WorkspacesConfig};

/// A workspace of a template whose desktop is `width` x `height`, ready, with its desktop.
struct WithDesktop {
    service: Arc<WorkspaceService>,
    workspace: Workspace,
    desktop: Arc<Desktop>,
    _data: tempfile::TempDir,
}

impl WithDesktop {
    async fn start(width: u32, height: u32) -> WithDesktop {
        WithDesktop::start_with(width, height, CommandLimits::default()).await
    }

    async fn start_with(width: u32, height: u32, limits: CommandLimits) -> WithDesktop {
        let data = tempfile::tempdir().unwrap();
        let templates = data.path().join("templates");
        std::fs::create_dir_all(templates.join("desk")).unwrap();
        std::fs::write(
            templates.join("desk/template.toml"),
            format!("name = 'Desk'\n[desktop]\nwidth = {width}\nheight = {height}\n"),
        )
        .unwrap();
        let store = Store::open(&Store::sqlite_url(data.path())).await.unwrap();
        let owner = store.create_user("alice", false).await.unwrap();
        let config = WorkspacesConfig { templates_dir: Some(templates), limits, ..WorkspacesConfig::default() };
        let service = WorkspaceService::start(store, data.path(), &config).await.unwrap();
        assert_eq!(service.sandbox_problem(), None, "run `bash .ci/system-deps` to install bubblewrap");
        let created = service
            .create(&owner.id, false, CreateRequest { template_id: "desk".into(), ..CreateRequest::default() })
            .await
            .unwrap();
        let workspace = service.wait_settled(&created.id, Duration::from_secs(30)).await.unwrap();
        assert_eq!(workspace.status.as_str(), "ready", "{:?}", workspace.detail);
        let desktop = service.desktop(&workspace).await.expect("run `bash .ci/system-deps` to install Xvnc and twm");
        WithDesktop { service, workspace, desktop, _data: data }
    }

    async fn run(&self, command: &str) -> String {
        let spec = CommandSpec { command: command.into(), ..CommandSpec::default() };
        let done = self.service.run(&self.workspace, spec, Duration::from_secs(30), false).await.unwrap();
        assert_eq!(done.exit_code, Some(0), "`{command}`: {}", done.output.text);
        done.output.text
    }

    fn spawn(&self, command: &str) {
        let spec = CommandSpec { command: command.into(), ..CommandSpec::default() };
        self.service.spawn(&self.workspace, spec, false).unwrap();
    }

    fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.service.local_files(&self.workspace.id).unwrap().join(name)).unwrap_or_default()
    }

    /// Waits (up to 10 s) until the workspace file `name` contains `needle`.
    async fn file_shows(&self, name: &str, needle: &str) -> String {
        for _ in 0..200 {
            let text = self.file(name);
            if text.contains(needle) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("`{name}` never showed `{needle}`:\n{}", self.file(name));
    }

    /// `xev` in a window covering the screen, its report in `xev.log`, mapped and ready.
    async fn xev(&self) {
        let (width, height) = (self.desktop.scaling.real_width, self.desktop.scaling.real_height);
        self.spawn(&format!("stdbuf -oL xev -geometry {width}x{height}+0+0 -name probe > xev.log 2>&1"));
        self.file_shows("xev.log", "MapNotify").await;
        // Its window has drawn and twm has placed it.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The RGB pixel at (`x`, `y`) of a PNG.
fn pixel(png_bytes: &[u8], x: u32, y: u32) -> [u8; 3] {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut buffer = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buffer).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    let at = (y as usize * info.width as usize + x as usize) * 3;
    [buffer[at], buffer[at + 1], buffer[at + 2]]
}

fn png_size(png_bytes: &[u8]) -> (u32, u32) {
    let reader = png::Decoder::new(std::io::Cursor::new(png_bytes)).read_info().unwrap();
    (reader.info().width, reader.info().height)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screenshots_show_what_the_desktops_programs_draw_scaled_for_the_model() {
    let desk = WithDesktop::start(1920, 1200).await;
    let scaling = desk.desktop.scaling;
    assert!(scaling.is_scaled(), "1920x1200 is over the model's 1.15 megapixels: {scaling:?}");
    assert!(scaling.model_width * scaling.model_height <= 1_150_000 && scaling.model_width <= 1568);

    desk.run("xsetroot -solid '#ff0000'").await;
    let shot = desk.desktop.screenshot(Format::Png, None).await.unwrap();
    assert_eq!((shot.width, shot.height), (scaling.model_width, scaling.model_height));
    assert_eq!(png_size(&shot.bytes), (scaling.model_width, scaling.model_height));
    assert_eq!(pixel(&shot.bytes, scaling.model_width / 2, scaling.model_height / 2), [255, 0, 0]);

    desk.run("xsetroot -solid '#0000ff'").await;
    let shot = desk.desktop.screenshot(Format::Png, None).await.unwrap();
    assert_eq!(pixel(&shot.bytes, 10, 10), [0, 0, 255], "the screen changed and the screenshot shows it");

    // Zoom: a region of the model's view, at the display's full resolution.
    let zoomed = desk.desktop.screenshot(Format::Png, Some(((100, 100), (199, 149)))).await.unwrap();
    let real = scaling.region_to_real((100, 100), (199, 149)).unwrap();
    assert_eq!((zoomed.width, zoomed.height), (real.width, real.height));
    assert!(zoomed.width > 100, "more real pixels than model ones: {}x{}", zoomed.width, zoomed.height);

    let jpeg = desk.desktop.screenshot(Format::Jpeg, None).await.unwrap();
    assert!(jpeg.bytes.starts_with(&[0xff, 0xd8]), "a JPEG");
    desk.service.stop(&desk.workspace.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_at_model_coordinates_land_on_the_exact_real_pixel_and_keys_arrive_as_typed() {
    let desk = WithDesktop::start(1920, 1200).await;
    desk.xev().await;
    let scaling = desk.desktop.scaling;
    for (x, y) in [(700, 400), (33, 517), (scaling.model_width as i64 - 5, scaling.model_height as i64 - 5)] {
        let (real_x, real_y) = scaling.to_real(x, y).unwrap();
        desk.desktop.click(Button::Left, Some((x, y)), 1, None).await.unwrap();
        let log = desk.file_shows("xev.log", &format!("root:({real_x},{real_y})")).await;
        assert!(log.contains("ButtonPress"), "{log}");
        assert_eq!(
            desk.desktop.cursor().await.unwrap(),
            (x as u32, y as u32),
            "the pointer maps back to the model's point"
        );
    }

    desk.desktop.type_text("hi!").await.unwrap();
    desk.file_shows("xev.log", "keysym 0x68, h)").await;
    desk.file_shows("xev.log", "keysym 0x69, i)").await;
    desk.file_shows("xev.log", "keysym 0x21, exclam)").await;
    // A character the keyboard lacks is mapped on the way.
    desk.desktop.type_text("é").await.unwrap();
    desk.file_shows("xev.log", "eacute").await;
    desk.desktop.keys("CTRL+L", 1).await.unwrap();
    desk.file_shows("xev.log", "Control_L").await;
    desk.file_shows("xev.log", "keysym 0x6c, l)").await;
    desk.desktop.scroll(Some((50, 50)), toolhost::workspace::desktop::Direction::Down, 2, None).await.unwrap();
    desk.file_shows("xev.log", "button 5").await;
    desk.service.stop(&desk.workspace.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_and_programs_are_bounded_and_the_desktop_lives_on() {
    // Limits small enough that a runaway program meets them at once.
    let limits = CommandLimits { processes: 64, memory_mib: 1024, ..CommandLimits::default() };
    let desk = WithDesktop::start_with(1280, 800, limits).await;
    assert!(!desk.desktop.scaling.is_scaled(), "1280x800 is what models read as it is");

    let outside = desk.desktop.click(Button::Left, Some((1280, 10)), 1, None).await.unwrap_err();
    assert!(matches!(&outside, WorkspaceError::Invalid(m) if m.contains("outside the screen")), "{outside:?}");
    let negative = desk.desktop.move_mouse((-1, 5)).await.unwrap_err();
    assert!(matches!(negative, WorkspaceError::Invalid(_)));
    let megabyte = "a".repeat(1024 * 1024);
    let too_long = desk.desktop.type_text(&megabyte).await.unwrap_err();
    assert!(matches!(&too_long, WorkspaceError::Invalid(m) if m.contains("16384")), "{too_long:?}");
    let unknown = desk.desktop.keys("ctrl+nosuchkey", 1).await.unwrap_err();
    assert!(matches!(&unknown, WorkspaceError::Invalid(m) if m.contains("nosuchkey")), "{unknown:?}");

    // A desktop program that eats memory, and one that forks without end: the sandbox's limits
    // stop them; the desktop still answers.
    let spec = CommandSpec {
        command: "python3 -c 'b = []\nwhile True: b.append(bytearray(64 << 20))'".into(),
        ..CommandSpec::default()
    };
    let eaten = desk.service.run(&desk.workspace, spec, Duration::from_secs(60), false).await.unwrap();
    assert_ne!(eaten.exit_code, Some(0), "{}", eaten.output.text);
    // Long enough for the refused forks to be reported even on a busy machine.
    let spec = CommandSpec { command: ":(){ :|:& };: ; sleep 3; echo survived".into(), ..CommandSpec::default() };
    let bomb = desk.service.run(&desk.workspace, spec, Duration::from_secs(20), false).await.unwrap();
    assert!(bomb.output.text.contains("Resource temporarily unavailable"), "{}", bomb.output.text);
    assert!(desk.desktop.alive());
    desk.run("xsetroot -solid '#00ff00'").await;
    let shot = desk.desktop.screenshot(Format::Png, None).await.unwrap();
    assert_eq!(pixel(&shot.bytes, 640, 400), [0, 255, 0]);
    desk.service.stop(&desk.workspace.id).await.unwrap();
}

/// TCP sockets listening in the network namespace of process `pid`.
fn tcp_listeners_of(pid: u32) -> Vec<String> {
    let mut listening = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // State 0A is LISTEN.
            if fields.get(3) == Some(&"0A") {
                listening.push(format!("{table} {}", fields[1]));
            }
        }
    }
    listening
}

fn pids_of(program: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == program))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vnc_server_listens_on_no_tcp_port_and_the_desktop_ends_with_its_workspace() {
    let desk = WithDesktop::start(1280, 800).await;
    // The X server's command line does not name its workspace: its VNC socket folder's mount
    // (bound for the X server alone) does.
    let marker = format!(".desktops/{}/vnc", desk.workspace.id);
    let servers: Vec<u32> = pids_of("Xvnc")
        .into_iter()
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).is_ok_and(|m| m.contains(&marker)))
        .collect();
    assert_eq!(servers.len(), 1, "one X server for the workspace");
    assert_eq!(tcp_listeners_of(servers[0]), Vec::<String>::new(), "no TCP port in the X server's own namespace");
    assert!(desk.desktop.connect_viewer().is_ok(), "the VNC server listens on its Unix socket");
    let reach = desk
        .run("for port in 5900 5901 6000; do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && echo reached $port; done; echo checked")
        .await;
    assert!(!reach.contains("reached"), "a workspace command reaches no VNC or X port: {reach}");
    let seen = desk.run("ls -a /tmp /tmp/.X11-unix; echo DISPLAY=$DISPLAY").await;
    assert!(seen.contains("X0") && seen.contains("DISPLAY=:0"), "commands get the display: {seen}");
    assert!(!seen.contains(".toolhost-vnc"), "commands do not see the VNC socket: {seen}");

    desk.service.stop(&desk.workspace.id).await.unwrap();
    for _ in 0..100 {
        if !pids_of("Xvnc").contains(&servers[0]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!pids_of("Xvnc").contains(&servers[0]), "the X server ended with its workspace");
    assert!(!desk.desktop.alive());
    let error = desk.desktop.screenshot(Format::Png, None).await.unwrap_err();
    assert!(matches!(error, WorkspaceError::Failed(_)), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_reaches_the_desktop_only_through_sockets_its_own_processes_serve() {
    let desk = WithDesktop::start(640, 480).await;
    // A workspace command sees the X socket's folder read-only: it can connect, not replace.
    let tampered = desk
        .run("rm -f /tmp/.X11-unix/X0 2>&1; ln -sf /run/postgresql/.s.PGSQL.5432 /tmp/.X11-unix/X0 2>&1; test -S /tmp/.X11-unix/X0 && echo still a socket")
        .await;
    assert!(tampered.contains("Read-only file system") && tampered.contains("still a socket"), "{tampered}");
    assert!(desk.desktop.screenshot(Format::Png, None).await.is_ok());

    // Should a process in the desktop's own sandbox replace the VNC socket (its X server
    // taken over), the host refuses both a link to a socket of the host's and a socket of
    // the host's in its place.
    let vnc = desk._data.path().join("workspaces/.desktops").join(&desk.workspace.id).join("vnc/rfb");
    let hosts = tempfile::tempdir().unwrap();
    let host_socket = hosts.path().join("service.sock");
    let _service = std::os::unix::net::UnixListener::bind(&host_socket).unwrap();
    std::fs::remove_file(&vnc).unwrap();
    std::os::unix::fs::symlink(&host_socket, &vnc).unwrap();
    let error = desk.desktop.connect_viewer().unwrap_err().to_string();
    assert!(error.contains("not a socket"), "{error}");
    std::fs::remove_file(&vnc).unwrap();
    let _in_its_place = std::os::unix::net::UnixListener::bind(&vnc).unwrap();
    let error = desk.desktop.connect_viewer().unwrap_err().to_string();
    assert!(error.contains("not the desktop's"), "{error}");
}
