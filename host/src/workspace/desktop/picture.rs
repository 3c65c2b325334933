//! What the model sees of a display: the display scaled to the size the provider's models read
//! best (the long edge at most 1568 px and about 1.15 megapixels), coordinates mapped between
//! that "model space" and the real display, and screenshots encoded as PNG or JPEG.

use std::time::Duration;

use fast_image_resize::{self as fir, images::Image as FirImage};
use serde::Serialize;

/// Longest edge of an image the model is shown.
pub const MAX_LONG_EDGE: u32 = 1568;
/// Pixels of an image the model is shown, at most.
pub const MAX_PIXELS: u64 = 1_150_000;
/// JPEG quality of screenshots asked for as JPEG.
const JPEG_QUALITY: u8 = 80;

/// A rectangle in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// The real display's size and the model's view of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Scaling {
    pub real_width: u32,
    pub real_height: u32,
    pub model_width: u32,
    pub model_height: u32,
}

impl Scaling {
    /// The model's size of a `width` x `height` display: scaled down (never up) until both limits hold.
    pub fn of_display(width: u32, height: u32) -> Scaling {
        let (model_width, model_height) = fit(width, height);
        Scaling { real_width: width, real_height: height, model_width, model_height }
    }

    pub fn is_scaled(&self) -> bool {
        (self.model_width, self.model_height) != (self.real_width, self.real_height)
    }

    /// The real pixel at the centre of model pixel (`x`, `y`), or why there is none.
    pub fn to_real(&self, x: i64, y: i64) -> Result<(u32, u32), String> {
        if x < 0 || y < 0 || x >= self.model_width as i64 || y >= self.model_height as i64 {
            return Err(format!(
                "({x}, {y}) is outside the screen, which is {}x{} (x from 0 to {}, y from 0 to {}); take a screenshot and aim inside it",
                self.model_width,
                self.model_height,
                self.model_width - 1,
                self.model_height - 1
            ));
        }
        Ok((centre(x as u32, self.real_width, self.model_width), centre(y as u32, self.real_height, self.model_height)))
    }

    /// The model pixel that the centre of real pixel (`x`, `y`) falls in: the inverse of
    /// [`Scaling::to_real`] (a model pixel's centre lies in the real pixel it maps to, and that
    /// real pixel's centre lies back in the model pixel, since model pixels are the larger).
    pub fn to_model(&self, x: u32, y: u32) -> (u32, u32) {
        (
            centre(x.min(self.real_width.saturating_sub(1)), self.model_width, self.real_width),
            centre(y.min(self.real_height.saturating_sub(1)), self.model_height, self.real_height),
        )
    }

    /// A region given in model space, `[x1, y1]` to `[x2, y2]` inclusive, as real pixels.
    pub fn region_to_real(&self, from: (i64, i64), to: (i64, i64)) -> Result<Rect, String> {
        let (left, right) = (from.0.min(to.0), from.0.max(to.0));
        let (top, bottom) = (from.1.min(to.1), from.1.max(to.1));
        let (x1, y1) = self.to_real(left, top)?;
        let (x2, y2) = self.to_real(right, bottom)?;
        // The region covers whole model pixels: from the first real pixel of the first to the
        // last real pixel of the last.
        let start = |v: u32, real: u32, model: u32| ((v as u64 * real as u64) / model as u64) as u32;
        let end =
            |v: u32, real: u32, model: u32| (((v as u64 + 1) * real as u64).div_ceil(model as u64) as u32).min(real);
        let x = start(left as u32, self.real_width, self.model_width).min(x1);
        let y = start(top as u32, self.real_height, self.model_height).min(y1);
        let x_end = end(right as u32, self.real_width, self.model_width).max(x2 + 1);
        let y_end = end(bottom as u32, self.real_height, self.model_height).max(y2 + 1);
        Ok(Rect { x, y, width: x_end - x, height: y_end - y })
    }
}

/// The pixel of a `to`-wide grid that the centre of pixel `v` of a `from`-wide grid falls in.
fn centre(v: u32, to: u32, from: u32) -> u32 {
    (((2 * v as u64 + 1) * to as u64) / (2 * from.max(1) as u64)) as u32
}

/// The largest size of the same shape within [`MAX_LONG_EDGE`] and [`MAX_PIXELS`].
pub fn fit(width: u32, height: u32) -> (u32, u32) {
    let (w, h) = (width.max(1) as f64, height.max(1) as f64);
    let scale = 1f64.min(MAX_LONG_EDGE as f64 / w.max(h)).min((MAX_PIXELS as f64 / (w * h)).sqrt());
    if scale >= 1.0 {
        return (width.max(1), height.max(1));
    }
    // A hair above the product, so that a scale of exactly `limit / w` gives `limit`.
    (((w * scale + 1e-6).floor() as u32).max(1), ((h * scale + 1e-6).floor() as u32).max(1))
}

/// How a screenshot is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Png,
    Jpeg,
}

impl Format {
    pub fn mime_type(self) -> &'static str {
        match self {
            Format::Png => "image/png",
            Format::Jpeg => "image/jpeg",
        }
    }
}

/// An encoded screenshot.
#[derive(Clone, Debug)]
pub struct Picture {
    pub format: Format,
    pub width: u32,
    pub height: u32,
    pub bytes: Vec<u8>,
    /// Time spent reading the pixels from the X server and encoding them.
    pub capture: Duration,
    pub encode: Duration,
}

/// Pixels as 8-bit RGB, row after row.
pub struct Rgb {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

/// Scales `image` to `width` x `height` (bilinear; a no-op at the same size).
pub fn resize(image: Rgb, width: u32, height: u32) -> Result<Rgb, String> {
    if (image.width, image.height) == (width, height) {
        return Ok(image);
    }
    let source = FirImage::from_vec_u8(image.width, image.height, image.data, fir::PixelType::U8x3)
        .map_err(|e| format!("cannot scale the screenshot: {e}"))?;
    let mut target = FirImage::new(width, height, fir::PixelType::U8x3);
    let options = fir::ResizeOptions::new().resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::Bilinear));
    fir::Resizer::new()
        .resize(&source, &mut target, &options)
        .map_err(|e| format!("cannot scale the screenshot: {e}"))?;
    Ok(Rgb { width, height, data: target.into_vec() })
}

/// Encodes RGB pixels.
pub fn encode(image: &Rgb, format: Format) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::with_capacity(image.data.len() / 4);
    match format {
        Format::Png => {
            let mut encoder = png::Encoder::new(&mut bytes, image.width, image.height);
            encoder.set_color(png::ColorType::Rgb);
            encoder.set_depth(png::BitDepth::Eight);
            // Screens are mostly flat colour: the fast setting compresses them well, in a few ms.
            encoder.set_compression(png::Compression::Fast);
            let mut writer = encoder.write_header().map_err(|e| format!("cannot encode the screenshot: {e}"))?;
            writer.write_image_data(&image.data).map_err(|e| format!("cannot encode the screenshot: {e}"))?;
            writer.finish().map_err(|e| format!("cannot encode the screenshot: {e}"))?;
        }
        Format::Jpeg => {
            let (width, height) = (
                u16::try_from(image.width).map_err(|_| "the screenshot is too wide for JPEG".to_string())?,
                u16::try_from(image.height).map_err(|_| "the screenshot is too tall for JPEG".to_string())?,
            );
            jpeg_encoder::Encoder::new(&mut bytes, JPEG_QUALITY)
                .encode(&image.data, width, height, jpeg_encoder::ColorType::Rgb)
                .map_err(|e| format!("cannot encode the screenshot: {e}"))?;
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_within_the_limits_are_not_scaled() {
        let scaling = Scaling::of_display(1280, 800);
        assert!(!scaling.is_scaled());
        assert_eq!(scaling.to_real(1279, 799).unwrap(), (1279, 799));
        assert_eq!(scaling.to_real(0, 0).unwrap(), (0, 0));
    }

    #[test]
    fn large_displays_are_scaled_to_both_limits() {
        let (w, h) = fit(1920, 1200);
        assert!(w as u64 * h as u64 <= MAX_PIXELS && w <= MAX_LONG_EDGE, "{w}x{h}");
        assert!((w as f64 / h as f64 - 1.6).abs() < 0.01, "same shape: {w}x{h}");
        let (w, h) = fit(3000, 400);
        assert_eq!(w, MAX_LONG_EDGE, "{w}x{h}");
    }

    #[test]
    fn model_coordinates_map_to_the_centre_of_their_real_pixels_and_back() {
        let scaling = Scaling::of_display(1920, 1200);
        for x in (0..scaling.model_width as i64).step_by(7).chain([scaling.model_width as i64 - 1]) {
            let (real, _) = scaling.to_real(x, 0).unwrap();
            assert_eq!(scaling.to_model(real, 0).0 as i64, x, "model x {x} -> real {real}");
        }
        assert!(scaling.to_real(scaling.model_width as i64, 0).unwrap_err().contains("outside the screen"));
        assert!(scaling.to_real(-1, 5).is_err());
    }

    #[test]
    fn a_region_covers_whole_model_pixels() {
        let scaling = Scaling::of_display(1920, 1200);
        let rect = scaling.region_to_real((0, 0), (9, 9)).unwrap();
        assert_eq!((rect.x, rect.y), (0, 0));
        assert!(rect.width >= 14 && rect.width <= 15, "{rect:?}");
        let whole =
            scaling.region_to_real((0, 0), (scaling.model_width as i64 - 1, scaling.model_height as i64 - 1)).unwrap();
        assert_eq!((whole.width, whole.height), (1920, 1200));
    }

    #[test]
    fn screenshots_encode_as_png_and_jpeg() {
        let image = Rgb { width: 64, height: 32, data: vec![200; 64 * 32 * 3] };
        assert!(encode(&image, Format::Png).unwrap().starts_with(b"\x89PNG"));
        assert!(encode(&image, Format::Jpeg).unwrap().starts_with(&[0xff, 0xd8]));
        let half = resize(image, 32, 16).unwrap();
        assert_eq!(half.data.len(), 32 * 16 * 3);
    }
}
