//! One connection to a desktop's X server, speaking the X protocol from Rust: screenshots with
//! `GetImage`, input with the XTEST extension, keys found in (or added to) the server's keyboard
//! map. No program is started per action. Calls block (a round trip on a local socket, well
//! under a millisecond); the desktop runs them on a blocking thread.

use std::collections::HashMap;
use std::os::unix::net::UnixStream;

use x11rb::connection::{Connection, RequestConnection};
use x11rb::protocol::xproto::{self, ConnectionExt as _, ImageFormat, ImageOrder};
use x11rb::protocol::xtest::{self, ConnectionExt as _};
use x11rb::rust_connection::{DefaultStream, RustConnection};
use x11rb::wrapper::ConnectionExt as _;

use super::keys::Keysym;
use super::picture::{Rect, Rgb};

/// A mouse button as X numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Button {
    Left = 1,
    Middle = 2,
    Right = 3,
    WheelUp = 4,
    WheelDown = 5,
    WheelLeft = 6,
    WheelRight = 7,
}

const SHIFT_L: Keysym = 0xffe1;

pub struct Display {
    connection: RustConnection,
    root: xproto::Window,
    pub width: u32,
    pub height: u32,
    min_keycode: u8,
    max_keycode: u8,
    per_keycode: usize,
    /// The server's keyboard map: `per_keycode` keysyms per keycode from `min_keycode`.
    keymap: Vec<Keysym>,
    /// Keycodes with no keysym, lent to characters the keyboard map lacks (as xdotool does).
    spare: Vec<u8>,
    next_spare: usize,
    lent: HashMap<Keysym, u8>,
    /// Byte order and pixel size of the root window's images.
    layout: Layout,
}

#[derive(Clone, Copy, Debug)]
struct Layout {
    bytes_per_pixel: usize,
    /// Offsets of red, green and blue in a pixel.
    red: usize,
    green: usize,
    blue: usize,
}

type Result<T> = std::result::Result<T, String>;

fn x_error(e: impl std::fmt::Display) -> String {
    format!("the desktop's X server did not answer: {e}")
}

impl Display {
    /// Speaks X over `stream`, connected to the desktop's X server (see `socket::connect`).
    pub fn connect(stream: UnixStream) -> Result<Display> {
        let (stream, _) = DefaultStream::from_unix_stream(stream).map_err(x_error)?;
        let connection = RustConnection::connect_to_stream(stream, 0).map_err(x_error)?;
        if connection.extension_information(xtest::X11_EXTENSION_NAME).map_err(x_error)?.is_none() {
            return Err("the desktop's X server lacks the XTEST extension, which input needs".into());
        }
        connection.xtest_get_version(2, 2).map_err(x_error)?.reply().map_err(x_error)?;
        let setup = connection.setup();
        let screen = setup.roots.first().ok_or("the desktop's X server has no screen")?;
        let layout = layout(setup, screen)?;
        let (root, width, height) = (screen.root, screen.width_in_pixels as u32, screen.height_in_pixels as u32);
        let (min_keycode, max_keycode) = (setup.min_keycode, setup.max_keycode);
        let mut display = Display {
            connection,
            root,
            width,
            height,
            min_keycode,
            max_keycode,
            per_keycode: 1,
            keymap: Vec::new(),
            spare: Vec::new(),
            next_spare: 0,
            lent: HashMap::new(),
            layout,
        };
        display.read_keymap()?;
        Ok(display)
    }

    fn read_keymap(&mut self) -> Result<()> {
        let count = self.max_keycode - self.min_keycode + 1;
        let reply =
            self.connection.get_keyboard_mapping(self.min_keycode, count).map_err(x_error)?.reply().map_err(x_error)?;
        self.per_keycode = reply.keysyms_per_keycode.max(1) as usize;
        self.keymap = reply.keysyms;
        self.spare = (0..count as usize)
            .filter(|i| self.keysyms_of(*i).iter().all(|k| *k == 0))
            .map(|i| self.min_keycode + i as u8)
            .collect();
        Ok(())
    }

    fn keysyms_of(&self, index: usize) -> &[Keysym] {
        let start = index * self.per_keycode;
        self.keymap.get(start..start + self.per_keycode).unwrap_or(&[])
    }

    /// The root window's pixels in `rect` (real pixels), as RGB.
    pub fn capture(&self, rect: Rect) -> Result<Rgb> {
        let reply = self
            .connection
            .get_image(
                ImageFormat::Z_PIXMAP,
                self.root,
                rect.x as i16,
                rect.y as i16,
                rect.width as u16,
                rect.height as u16,
                !0,
            )
            .map_err(x_error)?
            .reply()
            .map_err(x_error)?;
        let Layout { bytes_per_pixel, red, green, blue } = self.layout;
        let pixels = rect.width as usize * rect.height as usize;
        if reply.data.len() < pixels * bytes_per_pixel {
            return Err(format!(
                "the X server sent {} bytes for a {}x{} image",
                reply.data.len(),
                rect.width,
                rect.height
            ));
        }
        let mut data = Vec::with_capacity(pixels * 3);
        // Rows of 32-bit pixels have no padding; 24-bit ones are padded to 32 bits.
        let stride = (rect.width as usize * bytes_per_pixel).div_ceil(4) * 4;
        for row in reply.data.chunks(stride).take(rect.height as usize) {
            for pixel in row[..rect.width as usize * bytes_per_pixel].chunks_exact(bytes_per_pixel) {
                data.extend_from_slice(&[pixel[red], pixel[green], pixel[blue]]);
            }
        }
        Ok(Rgb { width: rect.width, height: rect.height, data })
    }

    /// Where the pointer is, in real pixels.
    pub fn pointer(&self) -> Result<(u32, u32)> {
        let reply = self.connection.query_pointer(self.root).map_err(x_error)?.reply().map_err(x_error)?;
        Ok((reply.root_x.max(0) as u32, reply.root_y.max(0) as u32))
    }

    pub fn move_to(&self, x: u32, y: u32) -> Result<()> {
        self.fake(xproto::MOTION_NOTIFY_EVENT, 0, x as i16, y as i16)
    }

    pub fn button(&self, button: Button, down: bool) -> Result<()> {
        let kind = if down { xproto::BUTTON_PRESS_EVENT } else { xproto::BUTTON_RELEASE_EVENT };
        self.fake(kind, button as u8, 0, 0)
    }

    pub fn key(&self, keycode: u8, down: bool) -> Result<()> {
        let kind = if down { xproto::KEY_PRESS_EVENT } else { xproto::KEY_RELEASE_EVENT };
        self.fake(kind, keycode, 0, 0)
    }

    fn fake(&self, kind: u8, detail: u8, x: i16, y: i16) -> Result<()> {
        self.connection.xtest_fake_input(kind, detail, x11rb::CURRENT_TIME, self.root, x, y, 0).map_err(x_error)?;
        Ok(())
    }

    /// Waits until the server has handled everything sent so far.
    pub fn sync(&self) -> Result<()> {
        self.connection.sync().map_err(x_error)
    }

    /// The keycode that types `keysym`, and whether Shift must be held for it. A keysym the
    /// keyboard map lacks is given a spare keycode (the map changes; clients follow).
    pub fn keycode(&mut self, keysym: Keysym) -> Result<(u8, bool)> {
        // A key that types it unshifted first, then one that types it with Shift.
        for (column, shifted) in [(0, false), (1, true)] {
            let found = (0..self.keymap.len() / self.per_keycode)
                .find(|index| self.keysyms_of(*index).get(column) == Some(&keysym));
            if let Some(index) = found {
                return Ok((self.min_keycode + index as u8, shifted));
            }
        }
        if let Some(keycode) = self.lent.get(&keysym) {
            return Ok((*keycode, false));
        }
        if self.spare.is_empty() {
            return Err("the desktop's keyboard has no free key for this character".into());
        }
        let keycode = self.spare[self.next_spare % self.spare.len()];
        self.next_spare += 1;
        self.lent.retain(|_, lent| *lent != keycode);
        let syms = vec![keysym; self.per_keycode];
        self.connection.change_keyboard_mapping(1, keycode, self.per_keycode as u8, &syms).map_err(x_error)?;
        self.sync()?;
        self.lent.insert(keysym, keycode);
        Ok((keycode, false))
    }

    /// The keycode of Shift.
    pub fn shift(&mut self) -> Result<u8> {
        self.keycode(SHIFT_L).map(|(keycode, _)| keycode)
    }
}

/// Where red, green and blue are in the root window's pixels (TrueColor, 24 or 32 bits).
fn layout(setup: &xproto::Setup, screen: &xproto::Screen) -> Result<Layout> {
    let format = setup
        .pixmap_formats
        .iter()
        .find(|f| f.depth == screen.root_depth)
        .ok_or("the desktop's X server does not describe its pixel format")?;
    let visual = screen
        .allowed_depths
        .iter()
        .flat_map(|d| d.visuals.iter())
        .find(|v| v.visual_id == screen.root_visual)
        .ok_or("the desktop's X server does not describe its colours")?;
    let bytes_per_pixel = format.bits_per_pixel as usize / 8;
    if !(3..=4).contains(&bytes_per_pixel) {
        return Err(format!(
            "the desktop's X server uses {} bits per pixel; only 24-bit colour desktops are supported (depth 24)",
            format.bits_per_pixel
        ));
    }
    let offset = |mask: u32| -> Result<usize> {
        let shift = mask.trailing_zeros() as usize;
        if mask >> shift != 0xff || !shift.is_multiple_of(8) {
            return Err("the desktop's X server uses a colour layout this server cannot read".into());
        }
        let byte = shift / 8;
        Ok(if setup.image_byte_order == ImageOrder::LSB_FIRST { byte } else { bytes_per_pixel - 1 - byte })
    };
    Ok(Layout {
        bytes_per_pixel,
        red: offset(visual.red_mask)?,
        green: offset(visual.green_mask)?,
        blue: offset(visual.blue_mask)?,
    })
}
