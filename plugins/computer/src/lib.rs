//! The bundled `computer` plugin: one tool, `computer`, with Anthropic's computer-use action
//! set, on the `desktop` capability. Every action but `cursor_position` answers with a
//! screenshot taken once the screen has settled, so the model sees what its action did.

use schemars::JsonSchema;
use serde::Deserialize;
use toolhost_plugin::desktop::{self, ImageFormat, MouseButton, Point, ScrollDirection};
use toolhost_plugin::{CallContext, Content, Plugin, Tool, ToolError, ToolResult};

/// A PNG larger than this (a photo on screen, say) is sent as JPEG instead, to stay well
/// inside the result-size limit.
const MAX_PNG_BYTES: usize = 700 * 1024;
/// Longest `wait` or `hold_key`, in seconds.
const MAX_SECONDS: f64 = 60.0;

struct Computer;

impl Plugin for Computer {
    const NAME: &'static str = "computer";
    const SUMMARY: &'static str = "Drive the desktop beside the chat's workspace: screenshots, mouse and keyboard";

    fn tools() -> Vec<Tool> {
        vec![
            Tool::new(
                "computer",
                "Use the desktop of this chat's workspace with the mouse and keyboard, and see it. \
             Coordinates are pixels of the screenshots this tool returns, [x, y] from the top left. \
             Every action but cursor_position returns a screenshot taken after it. \
             Start with `screenshot` to see the screen.",
                computer,
            )
            .open_world(),
        ]
    }
}

toolhost_plugin::export_plugin!(Computer);

#[derive(Deserialize, serde::Serialize, JsonSchema, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
enum Action {
    Screenshot,
    LeftClick,
    RightClick,
    MiddleClick,
    DoubleClick,
    TripleClick,
    MouseMove,
    LeftClickDrag,
    LeftMouseDown,
    LeftMouseUp,
    Scroll,
    Key,
    HoldKey,
    Type,
    Wait,
    CursorPosition,
    Zoom,
}

#[derive(Deserialize, JsonSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum Direction {
    Up,
    Down,
    Left,
    Right,
}

/// Arguments of `computer`.
#[derive(Deserialize, JsonSchema)]
struct ComputerArgs {
    /// What to do.
    action: Action,
    /// [x, y]: where to click, move the mouse, scroll, or end a drag.
    coordinate: Option<[i32; 2]>,
    /// [x, y]: where left_click_drag starts.
    start_coordinate: Option<[i32; 2]>,
    /// `type`: the text to type. `key`: the combination, such as `ctrl+l` or `Return`.
    /// `hold_key`: the key to hold. Clicks and `scroll`: modifier keys to hold meanwhile (`shift`).
    text: Option<String>,
    scroll_direction: Option<Direction>,
    /// Wheel clicks to scroll (default 3).
    scroll_amount: Option<u32>,
    /// `wait` and `hold_key`: seconds (at most 60).
    duration: Option<f64>,
    /// `zoom`: [x1, y1, x2, y2], the corners of the region to see at full resolution.
    region: Option<[i32; 4]>,
    /// `key`: how many times to press it (default 1).
    repeat: Option<u32>,
}

fn at(coordinate: [i32; 2]) -> Point {
    Point { x: coordinate[0], y: coordinate[1] }
}

fn required<T>(value: Option<T>, field: &str, action: &str) -> Result<T, ToolError> {
    value.ok_or_else(|| ToolError::InvalidArguments(format!("`{action}` needs `{field}`")))
}

fn seconds(duration: Option<f64>, action: &str) -> Result<u32, ToolError> {
    let duration = required(duration, "duration", action)?;
    if !duration.is_finite() || !(0.0..=MAX_SECONDS).contains(&duration) {
        return Err(ToolError::InvalidArguments(format!(
            "`duration` is in seconds, from 0 to {MAX_SECONDS}; wait several times for longer"
        )));
    }
    Ok((duration * 1000.0).round() as u32)
}

fn computer(_ctx: &CallContext, args: ComputerArgs) -> Result<ToolResult, ToolError> {
    let action = args.action;
    let name = serde_json::to_value(action).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
    let modifiers = args.text.as_deref().filter(|t| !t.trim().is_empty());
    let mut said = None;
    match action {
        Action::Screenshot => {}
        Action::LeftClick | Action::RightClick | Action::MiddleClick | Action::DoubleClick | Action::TripleClick => {
            let (button, count) = match action {
                Action::RightClick => (MouseButton::Right, 1),
                Action::MiddleClick => (MouseButton::Middle, 1),
                Action::DoubleClick => (MouseButton::Left, 2),
                Action::TripleClick => (MouseButton::Left, 3),
                _ => (MouseButton::Left, 1),
            };
            desktop::click(button, args.coordinate.map(at), count, modifiers)?;
        }
        Action::MouseMove => desktop::move_mouse(at(required(args.coordinate, "coordinate", &name)?))?,
        Action::LeftClickDrag => {
            let from = required(args.start_coordinate, "start_coordinate", &name)?;
            let to = required(args.coordinate, "coordinate", &name)?;
            desktop::drag(at(from), at(to))?;
        }
        Action::LeftMouseDown | Action::LeftMouseUp => {
            if let Some(coordinate) = args.coordinate {
                desktop::move_mouse(at(coordinate))?;
            }
            desktop::button_state(MouseButton::Left, action == Action::LeftMouseDown)?;
        }
        Action::Scroll => {
            let direction = match required(args.scroll_direction, "scroll_direction", &name)? {
                Direction::Up => ScrollDirection::Up,
                Direction::Down => ScrollDirection::Down,
                Direction::Left => ScrollDirection::Left,
                Direction::Right => ScrollDirection::Right,
            };
            desktop::scroll(args.coordinate.map(at), direction, args.scroll_amount.unwrap_or(3), modifiers)?;
        }
        Action::Key => {
            let keys = required(args.text.as_deref(), "text", &name)?;
            desktop::press_keys(keys, args.repeat.unwrap_or(1))?;
        }
        Action::HoldKey => {
            let keys = required(args.text.as_deref(), "text", &name)?;
            let ms = seconds(args.duration, &name)?;
            desktop::key_state(keys, true)?;
            let waited = desktop::wait(ms);
            // Let go whatever happened while holding.
            desktop::key_state(keys, false)?;
            waited?;
        }
        Action::Type => desktop::type_text(required(args.text.as_deref(), "text", &name)?)?,
        Action::Wait => desktop::wait(seconds(args.duration, &name)?)?,
        Action::CursorPosition => {
            let p = desktop::cursor_position()?;
            said = Some(format!("X={}, Y={}", p.x, p.y));
        }
        Action::Zoom => {}
    }
    let mut content = Vec::new();
    if let Some(note) = desktop::take_over_note() {
        content.push(Content::Text(note));
    }
    if let Some(text) = said {
        content.push(Content::Text(text));
        return Ok(ToolResult { content, is_error: false });
    }
    let zoom = match action {
        Action::Zoom => {
            let [x1, y1, x2, y2] = required(args.region, "region", &name)?;
            Some((Point { x: x1, y: y1 }, Point { x: x2, y: y2 }))
        }
        _ => None,
    };
    let mut image = desktop::screenshot(ImageFormat::Png, zoom)?;
    if image.data.len() > MAX_PNG_BYTES {
        image = desktop::screenshot(ImageFormat::Jpeg, zoom)?;
    }
    content.push(Content::Image(image));
    Ok(ToolResult { content, is_error: false })
}
