//! A desktop beside a workspace: an X server without a GPU (TigerVNC's `Xvnc`, which is also the
//! VNC server people watch through) and a small window manager (`twm`), started in the
//! workspace's sandbox the first time a chat needs it and stopped with the workspace. Its
//! programs are workspace commands like any other: the same files, confinement, limits and
//! network rule; they reach the display through the X socket folder that every command of the
//! workspace gets while the desktop runs.
//!
//! The host drives the desktop over the X protocol (see `display`): screenshots and input in
//! the model's coordinates, which `picture` maps to the real display. The VNC server listens
//! on a Unix socket only, in a folder no workspace command sees; `Desktop::connect_viewer` is
//! how the host's desktop endpoint reaches it. The host connects to either socket only through
//! `socket::connect`, which refuses one the desktop's processes do not serve.

pub mod display;
pub mod keys;
pub mod picture;
pub mod socket;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::WorkspaceError;
use display::{Button, Display};
use picture::{Format, Picture, Rect, Scaling};

/// Where the X server's socket folder appears inside the sandbox (the display is `:0`).
pub const X11_MOUNT: &str = "/tmp/.X11-unix";
/// Where the VNC socket's folder appears inside the X server's sandbox (and nowhere else).
pub const VNC_MOUNT: &str = "/tmp/.toolhost-vnc";
/// The display every workspace's commands see.
pub const DISPLAY: &str = ":0";
/// Longest text one `type` action enters.
pub const MAX_TYPE_CHARS: usize = 16 * 1024;
/// Most wheel clicks one scroll action makes.
pub const MAX_SCROLL: u32 = 100;
/// Longest a `wait` or a held key lasts.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// A template's `[desktop]`: the display's size and colour depth.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Geometry {
    pub width: u32,
    pub height: u32,
    /// Bits per pixel; 24 is the only depth supported.
    pub depth: u32,
}

impl Default for Geometry {
    fn default() -> Geometry {
        Geometry { width: 1280, height: 800, depth: 24 }
    }
}

impl Geometry {
    pub fn validate(&self) -> Result<(), String> {
        if !(320..=7680).contains(&self.width) || !(200..=4320).contains(&self.height) {
            return Err(format!(
                "[desktop] {}x{} is not a display size this server makes; width must be 320 to 7680 and height 200 to 4320",
                self.width, self.height
            ));
        }
        if self.depth != 24 {
            return Err(format!("[desktop] depth {} is not supported; use 24", self.depth));
        }
        Ok(())
    }

    pub fn scaling(&self) -> Scaling {
        Scaling::of_display(self.width, self.height)
    }
}

/// `[workspaces.desktop]` in the configuration file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DesktopConfig {
    /// How long a screenshot waits after the last input, so that programs have drawn.
    pub settle_ms: u64,
    /// How long the X server may take to start.
    pub start_timeout_secs: u64,
    /// Screenshots (tool results with images) sent to the model again in later steps; older
    /// ones are left out of the prompt (they stay in the chat).
    pub keep_screenshots: usize,
}

impl Default for DesktopConfig {
    fn default() -> DesktopConfig {
        DesktopConfig { settle_ms: 300, start_timeout_secs: 10, keep_screenshots: 3 }
    }
}

/// The host folders of a workspace's desktop: the X socket's (bound at [`X11_MOUNT`] in its
/// commands) and the VNC socket's (bound at [`VNC_MOUNT`] for the X server alone).
#[derive(Clone, Debug)]
pub struct Folders {
    pub x11: PathBuf,
    pub vnc: PathBuf,
}

impl Folders {
    pub fn x_socket(&self) -> PathBuf {
        self.x11.join("X0")
    }

    pub fn vnc_socket(&self) -> PathBuf {
        self.vnc.join("rfb")
    }
}

/// The command that runs the desktop in the sandbox: the X server, then the window manager
/// once the display accepts clients. It ends when the X server does.
pub fn server_script(geometry: &Geometry) -> String {
    format!(
        r#"Xvnc {DISPLAY} -geometry {w}x{h} -depth {d} -rfbunixpath {VNC_MOUNT}/rfb -rfbunixmode 0600 -rfbport -1 \
  -SecurityTypes None -nolisten tcp -nolisten local -AlwaysShared -desktop workspace -dpi 96 &
server=$!
until [ -S {X11_MOUNT}/X0 ]; do kill -0 $server 2>/dev/null || exit 1; sleep 0.01; done
cat > /tmp/twmrc <<'EOF'
RandomPlacement
UsePPosition "on"
NoGrabServer
EOF
DISPLAY={DISPLAY} twm -f /tmp/twmrc &
wait $server
"#,
        w = geometry.width,
        h = geometry.height,
        d = geometry.depth,
    )
}

/// A running desktop, driven through its X connection.
pub struct Desktop {
    pub workspace_id: String,
    pub scaling: Scaling,
    display: Arc<Mutex<Display>>,
    vnc_socket: PathBuf,
    /// The first process of the desktop's sandbox, below which its X server runs.
    sandbox_pid: u32,
    settle: Duration,
    last_input: Mutex<Option<Instant>>,
    /// Cancelled when the X server has ended.
    pub ended: CancellationToken,
    /// Input people sent through the desktop endpoint since the model last looked.
    taken_over: Mutex<Option<TakeOver>>,
    /// Start-up time, for the benchmark and the log.
    pub started_in: Duration,
}

#[derive(Clone, Copy, Debug)]
struct TakeOver {
    events: u64,
    since: Instant,
}

/// Which way a scroll goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
    Left,
    Right,
}

impl Desktop {
    pub fn new(
        workspace_id: &str,
        display: Display,
        folders: &Folders,
        sandbox_pid: u32,
        settle: Duration,
        started_in: Duration,
    ) -> Desktop {
        Desktop {
            workspace_id: workspace_id.to_string(),
            scaling: Scaling::of_display(display.width, display.height),
            display: Arc::new(Mutex::new(display)),
            vnc_socket: folders.vnc_socket(),
            sandbox_pid,
            settle,
            last_input: Mutex::new(None),
            ended: CancellationToken::new(),
            taken_over: Mutex::new(None),
            started_in,
        }
    }

    pub fn alive(&self) -> bool {
        !self.ended.is_cancelled()
    }

    /// A connection to the VNC server, for a person's viewer.
    pub fn connect_viewer(&self) -> Result<tokio::net::UnixStream, WorkspaceError> {
        let unreachable = |why: String| {
            tracing::warn!(workspace_id = %self.workspace_id, %why, "the desktop's VNC server cannot be reached");
            WorkspaceError::Failed(format!("the desktop's VNC server cannot be reached: {why}"))
        };
        let stream = socket::connect(&self.vnc_socket, self.sandbox_pid).map_err(unreachable)?;
        stream.set_nonblocking(true).map_err(|e| unreachable(e.to_string()))?;
        tokio::net::UnixStream::from_std(stream).map_err(|e| unreachable(e.to_string()))
    }

    /// Runs `work` on the X connection, on a blocking thread.
    async fn on_display<T, F>(&self, work: F) -> Result<T, WorkspaceError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Display) -> Result<T, String> + Send + 'static,
    {
        if !self.alive() {
            return Err(WorkspaceError::Failed(
                "the desktop's X server has ended; the next desktop action starts a new one".into(),
            ));
        }
        let display = self.display.clone();
        tokio::task::spawn_blocking(move || {
            let mut display = display.lock().unwrap_or_else(|e| e.into_inner());
            work(&mut display)
        })
        .await
        .map_err(|e| WorkspaceError::Failed(e.to_string()))?
        .map_err(WorkspaceError::Failed)
    }

    /// Input through the X connection; the screenshot after it waits for the screen to settle.
    async fn input<F>(&self, work: F) -> Result<(), WorkspaceError>
    where
        F: FnOnce(&mut Display) -> Result<(), String> + Send + 'static,
    {
        let result = self
            .on_display(move |display| {
                work(display)?;
                display.sync()
            })
            .await;
        *self.last_input.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        result
    }

    fn real(&self, point: (i64, i64)) -> Result<(u32, u32), WorkspaceError> {
        self.scaling.to_real(point.0, point.1).map_err(WorkspaceError::Invalid)
    }

    /// The screen (or, zoomed, a region of it at full resolution) as the model sees it.
    /// `region` is in model coordinates, corners inclusive.
    pub async fn screenshot(
        &self,
        format: Format,
        region: Option<((i64, i64), (i64, i64))>,
    ) -> Result<Picture, WorkspaceError> {
        let since_input = self.last_input.lock().unwrap_or_else(|e| e.into_inner()).map(|at| at.elapsed());
        if let Some(elapsed) = since_input
            && elapsed < self.settle
        {
            tokio::time::sleep(self.settle - elapsed).await;
        }
        let scaling = self.scaling;
        let (rect, size) = match region {
            None => (
                Rect { x: 0, y: 0, width: scaling.real_width, height: scaling.real_height },
                (scaling.model_width, scaling.model_height),
            ),
            Some((from, to)) => {
                let rect = scaling.region_to_real(from, to).map_err(WorkspaceError::Invalid)?;
                (rect, picture::fit(rect.width, rect.height))
            }
        };
        let started = Instant::now();
        let pixels = self.on_display(move |display| display.capture(rect)).await?;
        let capture = started.elapsed();
        let encoded = tokio::task::spawn_blocking(move || {
            let image = picture::resize(pixels, size.0, size.1)?;
            picture::encode(&image, format).map(|bytes| (bytes, image.width, image.height))
        })
        .await
        .map_err(|e| WorkspaceError::Failed(e.to_string()))?
        .map_err(WorkspaceError::Failed)?;
        let (bytes, width, height) = encoded;
        Ok(Picture { format, width, height, bytes, capture, encode: started.elapsed() - capture })
    }

    /// The pointer, in model coordinates.
    pub async fn cursor(&self) -> Result<(u32, u32), WorkspaceError> {
        let (x, y) = self.on_display(|display| display.pointer()).await?;
        Ok(self.scaling.to_model(x, y))
    }

    pub async fn move_mouse(&self, to: (i64, i64)) -> Result<(), WorkspaceError> {
        let (x, y) = self.real(to)?;
        self.input(move |display| display.move_to(x, y)).await
    }

    pub async fn button(&self, button: Button, down: bool) -> Result<(), WorkspaceError> {
        self.input(move |display| display.button(button, down)).await
    }

    /// Clicks `button` `count` times (2: double, 3: triple) at `at` (else where the pointer
    /// is), holding the keys of `modifiers` (`shift`, `ctrl+alt`) meanwhile.
    pub async fn click(
        &self,
        button: Button,
        at: Option<(i64, i64)>,
        count: u32,
        modifiers: Option<&str>,
    ) -> Result<(), WorkspaceError> {
        let at = at.map(|p| self.real(p)).transpose()?;
        let held = held_keys(modifiers)?;
        self.input(move |display| {
            if let Some((x, y)) = at {
                display.move_to(x, y)?;
            }
            with_keys_held(display, &held, |display| {
                for _ in 0..count.clamp(1, 3) {
                    display.button(button, true)?;
                    display.button(button, false)?;
                }
                Ok(())
            })
        })
        .await
    }

    /// Presses the left button at `from`, moves to `to` in steps, and releases it there.
    pub async fn drag(&self, from: (i64, i64), to: (i64, i64)) -> Result<(), WorkspaceError> {
        let (from, to) = (self.real(from)?, self.real(to)?);
        self.input(move |display| {
            display.move_to(from.0, from.1)?;
            display.button(Button::Left, true)?;
            display.sync()?;
            // Steps, so that programs that follow the motion (selections, sliders) see it.
            const STEPS: i64 = 8;
            for step in 1..=STEPS {
                let x = from.0 as i64 + (to.0 as i64 - from.0 as i64) * step / STEPS;
                let y = from.1 as i64 + (to.1 as i64 - from.1 as i64) * step / STEPS;
                display.move_to(x as u32, y as u32)?;
            }
            display.button(Button::Left, false)
        })
        .await
    }

    /// Turns the wheel `amount` clicks towards `direction`, at `at` (else where the pointer is).
    pub async fn scroll(
        &self,
        at: Option<(i64, i64)>,
        direction: Direction,
        amount: u32,
        modifiers: Option<&str>,
    ) -> Result<(), WorkspaceError> {
        if amount == 0 || amount > MAX_SCROLL {
            return Err(WorkspaceError::Invalid(format!(
                "scroll_amount must be between 1 and {MAX_SCROLL} wheel clicks"
            )));
        }
        let at = at.map(|p| self.real(p)).transpose()?;
        let held = held_keys(modifiers)?;
        let wheel = match direction {
            Direction::Up => Button::WheelUp,
            Direction::Down => Button::WheelDown,
            Direction::Left => Button::WheelLeft,
            Direction::Right => Button::WheelRight,
        };
        self.input(move |display| {
            if let Some((x, y)) = at {
                display.move_to(x, y)?;
            }
            with_keys_held(display, &held, |display| {
                for _ in 0..amount {
                    display.button(wheel, true)?;
                    display.button(wheel, false)?;
                }
                Ok(())
            })
        })
        .await
    }

    /// Presses a key combination (`ctrl+l`, `Return`) `repeat` times: keys down in order, up
    /// in reverse.
    pub async fn keys(&self, combination: &str, repeat: u32) -> Result<(), WorkspaceError> {
        let keys = keys::combination(combination).map_err(WorkspaceError::Invalid)?;
        let keysyms: Vec<keys::Keysym> = keys.iter().map(|k| k.keysym).collect();
        self.input(move |display| {
            for _ in 0..repeat.clamp(1, 100) {
                let codes = keysyms.iter().map(|k| display.keycode(*k)).collect::<Result<Vec<_>, _>>()?;
                let shift = if codes.iter().any(|(_, shifted)| *shifted) { Some(display.shift()?) } else { None };
                let mut pressed: Vec<u8> = shift.into_iter().collect();
                pressed.extend(codes.iter().map(|(code, _)| *code));
                for code in &pressed {
                    display.key(*code, true)?;
                }
                for code in pressed.iter().rev() {
                    display.key(*code, false)?;
                }
            }
            Ok(())
        })
        .await
    }

    /// Holds (`down`) or lets go of the keys of a combination.
    pub async fn key_state(&self, combination: &str, down: bool) -> Result<(), WorkspaceError> {
        let keys = keys::combination(combination).map_err(WorkspaceError::Invalid)?;
        self.input(move |display| {
            let codes = keys.iter().map(|k| display.keycode(k.keysym)).collect::<Result<Vec<_>, _>>()?;
            let ordered: Vec<_> = if down { codes } else { codes.into_iter().rev().collect() };
            for (code, _) in ordered {
                display.key(code, down)?;
            }
            Ok(())
        })
        .await
    }

    /// Types `text` as key presses (characters the keyboard lacks are mapped on the way).
    pub async fn type_text(&self, text: &str) -> Result<(), WorkspaceError> {
        let count = text.chars().count();
        if count > MAX_TYPE_CHARS {
            return Err(WorkspaceError::Invalid(format!(
                "the text is {count} characters; one `type` action enters at most {MAX_TYPE_CHARS}: type it in parts, or write long text to a file with a command"
            )));
        }
        let keysyms: Vec<keys::Keysym> = text.chars().map(keys::char_keysym).collect();
        self.input(move |display| {
            let shift = display.shift()?;
            for (i, keysym) in keysyms.into_iter().enumerate() {
                let (code, shifted) = display.keycode(keysym)?;
                if shifted {
                    display.key(shift, true)?;
                }
                display.key(code, true)?;
                display.key(code, false)?;
                if shifted {
                    display.key(shift, false)?;
                }
                // Let the server (and the program reading) keep up with long text.
                if i % 64 == 63 {
                    display.sync()?;
                }
            }
            Ok(())
        })
        .await
    }

    /// Notes input a person sent through the desktop endpoint.
    pub fn note_take_over(&self, events: u64) {
        let mut taken = self.taken_over.lock().unwrap_or_else(|e| e.into_inner());
        let entry = taken.get_or_insert(TakeOver { events: 0, since: Instant::now() });
        entry.events += events;
        *self.last_input.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// What a person did on the desktop since the model last asked, for the next tool result.
    pub fn take_over_note(&self) -> Option<String> {
        let taken = self.taken_over.lock().unwrap_or_else(|e| e.into_inner()).take()?;
        Some(format!(
            "Note: a person used this desktop ({} input events over the last {} s) since your previous action; the screen may have changed, so look before you act.",
            taken.events,
            taken.since.elapsed().as_secs().max(1)
        ))
    }
}

/// The keysyms of a modifier text (`shift`, `ctrl+alt`), held during a click or scroll.
fn held_keys(modifiers: Option<&str>) -> Result<Vec<keys::Keysym>, WorkspaceError> {
    match modifiers.map(str::trim).filter(|m| !m.is_empty()) {
        None => Ok(Vec::new()),
        Some(text) => {
            Ok(keys::combination(text).map_err(WorkspaceError::Invalid)?.into_iter().map(|k| k.keysym).collect())
        }
    }
}

fn with_keys_held(
    display: &mut Display,
    keysyms: &[keys::Keysym],
    work: impl FnOnce(&mut Display) -> Result<(), String>,
) -> Result<(), String> {
    let codes = keysyms.iter().map(|k| display.keycode(*k).map(|(code, _)| code)).collect::<Result<Vec<_>, _>>()?;
    for code in &codes {
        display.key(*code, true)?;
    }
    let result = work(display);
    for code in codes.iter().rev() {
        display.key(*code, false)?;
    }
    result
}
