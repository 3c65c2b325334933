//! The desktop beside the calling chat's workspace (capability `desktop`): screenshots and
//! input in the model's coordinates; the host scales them to the real display.

use crate::Image;
use crate::ToolError;
use crate::bindings::toolhost::plugin::desktop as wit;
pub use crate::bindings::toolhost::plugin::desktop::{
    DesktopError, DisplayInfo, ImageFormat, MouseButton, Point, ScrollDirection,
};

/// Starts the desktop unless it runs; its size as the model sees it.
pub fn open() -> Result<DisplayInfo, DesktopError> {
    wit::open()
}

/// The screen, or with `zoom` the region between two corners at full resolution.
pub fn screenshot(format: ImageFormat, zoom: Option<(Point, Point)>) -> Result<Image, DesktopError> {
    wit::screenshot(format, zoom)
}

pub fn cursor_position() -> Result<Point, DesktopError> {
    wit::cursor_position()
}

pub fn move_mouse(to: Point) -> Result<(), DesktopError> {
    wit::move_mouse(to)
}

pub fn button_state(button: MouseButton, down: bool) -> Result<(), DesktopError> {
    wit::button_state(button, down)
}

pub fn click(button: MouseButton, at: Option<Point>, count: u8, modifiers: Option<&str>) -> Result<(), DesktopError> {
    wit::click(button, at, count, modifiers)
}

pub fn drag(start: Point, end: Point) -> Result<(), DesktopError> {
    wit::drag(start, end)
}

pub fn scroll(
    at: Option<Point>,
    direction: ScrollDirection,
    amount: u32,
    modifiers: Option<&str>,
) -> Result<(), DesktopError> {
    wit::scroll(at, direction, amount, modifiers)
}

pub fn press_keys(keys: &str, repeat: u32) -> Result<(), DesktopError> {
    wit::press_keys(keys, repeat)
}

pub fn key_state(keys: &str, down: bool) -> Result<(), DesktopError> {
    wit::key_state(keys, down)
}

pub fn type_text(text: &str) -> Result<(), DesktopError> {
    wit::type_text(text)
}

pub fn wait(ms: u32) -> Result<(), DesktopError> {
    wit::wait(ms)
}

/// What a person did on the desktop since the last time this was asked.
pub fn take_over_note() -> Option<String> {
    wit::take_over_note()
}

impl From<DesktopError> for ToolError {
    fn from(e: DesktopError) -> ToolError {
        match e {
            DesktopError::Denied(m) => ToolError::Denied(m),
            DesktopError::NoWorkspace => ToolError::Failed(
                "this chat has no workspace, so it has no desktop; the chat that spawned this one must create a workspace first".into(),
            ),
            DesktopError::NotReady(m) | DesktopError::Failed(m) => ToolError::Failed(m),
            DesktopError::Invalid(m) => ToolError::InvalidArguments(m),
        }
    }
}
