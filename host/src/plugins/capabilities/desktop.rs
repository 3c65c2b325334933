//! Capability `desktop`: the desktop beside the calling chat's workspace. Every use is checked
//! against the policy with its scope: `view` for what only looks (screenshots, the pointer),
//! `input` for what acts. The desktop is found (or started) once per call and kept in the
//! call's state.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};

use super::{CallSetup, CallState, Capability, ChatServices};
use crate::plugins::bindings::toolhost::plugin::desktop::{
    self as wit, DesktopError, DisplayInfo, ImageFormat, MouseButton, Point, ScrollDirection,
};
use crate::plugins::bindings::toolhost::plugin::types::Image;
use crate::workspace::WorkspaceError;
use crate::workspace::desktop::display::Button;
use crate::workspace::desktop::picture::Format;
use crate::workspace::desktop::{self, Desktop, Direction};

pub struct DesktopCapability;

/// The scope of uses that only look.
const VIEW: &str = "view";
/// The scope of uses that act on the desktop.
const INPUT: &str = "input";

impl Capability for DesktopCapability {
    const NAME: &'static str = "desktop";
    /// The desktop this call drives, once found.
    type State = Option<Arc<Desktop>>;

    fn new_state(_: &CallSetup) -> Option<Arc<Desktop>> {
        None
    }

    fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
        wit::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)
    }
}

impl CallState {
    /// Checks the grant for `scope`, then finds (or starts) the chat's desktop. Starting one
    /// is the host's time, not the plugin's.
    async fn desktop(&mut self, scope: &str) -> Result<Arc<Desktop>, DesktopError> {
        self.grants.require_scoped(DesktopCapability::NAME, &self.identity.plugin, scope).map_err(DesktopError::Denied)?;
        if let Some(desktop) = self.state_of::<DesktopCapability>().as_ref().filter(|d| d.alive()) {
            return Ok(desktop.clone());
        }
        let access: ChatServices = self.chat.clone().ok_or(DesktopError::NoWorkspace)?;
        let host_waits = self.host_waits.clone();
        let desktop = host_waits
            .during(async {
                let workspace = access
                    .workspaces
                    .of_scope(&access.scope)
                    .await
                    .map_err(to_wit)?
                    .ok_or(DesktopError::NoWorkspace)?;
                access.workspaces.desktop(&workspace).await.map_err(to_wit)
            })
            .await?;
        *self.state_of::<DesktopCapability>() = Some(desktop.clone());
        Ok(desktop)
    }
}

fn point(p: Point) -> (i64, i64) {
    (p.x as i64, p.y as i64)
}

fn button(button: MouseButton) -> Button {
    match button {
        MouseButton::Left => Button::Left,
        MouseButton::Middle => Button::Middle,
        MouseButton::Right => Button::Right,
    }
}

impl wit::Host for CallState {
    async fn open(&mut self) -> Result<DisplayInfo, DesktopError> {
        let desktop = self.desktop(VIEW).await?;
        let s = desktop.scaling;
        Ok(DisplayInfo {
            width: s.model_width,
            height: s.model_height,
            real_width: s.real_width,
            real_height: s.real_height,
        })
    }

    async fn screenshot(&mut self, format: ImageFormat, zoom: Option<(Point, Point)>) -> Result<Image, DesktopError> {
        let desktop = self.desktop(VIEW).await?;
        let format = match format {
            ImageFormat::Png => Format::Png,
            ImageFormat::Jpeg => Format::Jpeg,
        };
        let region = zoom.map(|(from, to)| (point(from), point(to)));
        // The settle wait is the host's time.
        let picture = self.host_waits.clone().during(desktop.screenshot(format, region)).await.map_err(to_wit)?;
        Ok(Image { mime_type: picture.format.mime_type().to_string(), data: picture.bytes })
    }

    async fn cursor_position(&mut self) -> Result<Point, DesktopError> {
        let desktop = self.desktop(VIEW).await?;
        let (x, y) = desktop.cursor().await.map_err(to_wit)?;
        Ok(Point { x: x as i32, y: y as i32 })
    }

    async fn move_mouse(&mut self, to: Point) -> Result<(), DesktopError> {
        self.desktop(INPUT).await?.move_mouse(point(to)).await.map_err(to_wit)
    }

    async fn button_state(&mut self, which: MouseButton, down: bool) -> Result<(), DesktopError> {
        self.desktop(INPUT).await?.button(button(which), down).await.map_err(to_wit)
    }

    async fn click(
        &mut self,
        which: MouseButton,
        at: Option<Point>,
        count: u8,
        modifiers: Option<String>,
    ) -> Result<(), DesktopError> {
        if !(1..=3).contains(&count) {
            return Err(DesktopError::Invalid(format!("a click is 1 to 3 presses, not {count}")));
        }
        let desktop = self.desktop(INPUT).await?;
        desktop.click(button(which), at.map(point), count as u32, modifiers.as_deref()).await.map_err(to_wit)
    }

    async fn drag(&mut self, start: Point, end: Point) -> Result<(), DesktopError> {
        self.desktop(INPUT).await?.drag(point(start), point(end)).await.map_err(to_wit)
    }

    async fn scroll(
        &mut self,
        at: Option<Point>,
        direction: ScrollDirection,
        amount: u32,
        modifiers: Option<String>,
    ) -> Result<(), DesktopError> {
        let direction = match direction {
            ScrollDirection::Up => Direction::Up,
            ScrollDirection::Down => Direction::Down,
            ScrollDirection::Left => Direction::Left,
            ScrollDirection::Right => Direction::Right,
        };
        let desktop = self.desktop(INPUT).await?;
        desktop.scroll(at.map(point), direction, amount, modifiers.as_deref()).await.map_err(to_wit)
    }

    async fn press_keys(&mut self, keys: String, repeat: u32) -> Result<(), DesktopError> {
        if !(1..=100).contains(&repeat) {
            return Err(DesktopError::Invalid(format!("repeat must be between 1 and 100, not {repeat}")));
        }
        self.desktop(INPUT).await?.keys(&keys, repeat).await.map_err(to_wit)
    }

    async fn key_state(&mut self, keys: String, down: bool) -> Result<(), DesktopError> {
        self.desktop(INPUT).await?.key_state(&keys, down).await.map_err(to_wit)
    }

    async fn type_text(&mut self, text: String) -> Result<(), DesktopError> {
        let desktop = self.desktop(INPUT).await?;
        self.host_waits.clone().during(desktop.type_text(&text)).await.map_err(to_wit)
    }

    async fn wait(&mut self, ms: u32) -> Result<(), DesktopError> {
        let wait = Duration::from_millis(ms as u64);
        if wait > desktop::MAX_WAIT {
            return Err(DesktopError::Invalid(format!(
                "a wait is at most {} s; wait several times for longer",
                desktop::MAX_WAIT.as_secs()
            )));
        }
        self.desktop(VIEW).await?;
        self.host_waits.clone().during(tokio::time::sleep(wait)).await;
        Ok(())
    }

    async fn take_over_note(&mut self) -> Option<String> {
        self.desktop(VIEW).await.ok()?.take_over_note()
    }
}

fn to_wit(error: WorkspaceError) -> DesktopError {
    match error {
        WorkspaceError::Invalid(m) => DesktopError::Invalid(m),
        WorkspaceError::Denied(m) => DesktopError::Denied(m),
        WorkspaceError::NotReady(m) => DesktopError::NotReady(m),
        WorkspaceError::NotFound(m) | WorkspaceError::Conflict(m) | WorkspaceError::Failed(m) => DesktopError::Failed(m),
        WorkspaceError::Store(e) => DesktopError::Failed(super::database_failed(&e, "desktop")),
    }
}
