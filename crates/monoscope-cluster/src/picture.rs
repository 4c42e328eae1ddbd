//! Static pictures of the map, one dot per feature coloured by cluster: a PNG drawn here
//! pixel by pixel (encoded by the `png` crate) and an SVG with a legend of the largest
//! clusters and their label words. No plotting library: dots and a legend are all we draw.

use std::io::{self, Write};

/// Twenty well-separated colours (Tableau 20: the ten strong ones first), given to clusters in
/// order of size and reused cyclically; dead features are drawn in light grey.
pub const PALETTE: [[u8; 3]; 20] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
    [174, 199, 232],
    [255, 187, 120],
    [152, 223, 138],
    [255, 152, 150],
    [197, 176, 213],
    [196, 156, 148],
    [247, 182, 210],
    [199, 199, 199],
    [219, 219, 141],
    [158, 218, 229],
];
const DEAD: [u8; 3] = [225, 225, 225];

/// What to draw: coordinates in `[0, 1]`, a cluster per point, which points are live.
#[derive(Debug, Clone, Copy)]
pub struct MapPicture<'a> {
    pub x: &'a [f32],
    pub y: &'a [f32],
    pub cluster: &'a [u32],
    pub alive: &'a [bool],
}

impl MapPicture<'_> {
    fn colour(&self, i: usize) -> [u8; 3] {
        if self.alive[i] {
            PALETTE[self.cluster[i] as usize % PALETTE.len()]
        } else {
            DEAD
        }
    }

    fn radius(&self) -> f32 {
        match self.x.len() {
            0..=5_000 => 3.0,
            5_001..=50_000 => 2.0,
            _ => 1.2,
        }
    }

    /// Pixel position of point i in a square picture of `size` with a margin; y points up.
    fn pixel(&self, i: usize, size: f32) -> (f32, f32) {
        let margin = size * 0.03;
        let span = size - 2.0 * margin;
        (margin + self.x[i] * span, margin + (1.0 - self.y[i]) * span)
    }

    /// Encodes a `size × size` RGB PNG into `out`.
    pub fn write_png(&self, size: u32, out: &mut impl Write) -> io::Result<()> {
        let side = size as usize;
        let mut pixels = vec![255u8; side * side * 3];
        let radius = self.radius();
        let reach = radius.ceil() as isize;
        // Dead points first, so live ones are drawn over them.
        let order = (0..self.x.len())
            .filter(|&i| !self.alive[i])
            .chain((0..self.x.len()).filter(|&i| self.alive[i]));
        for i in order {
            let (cx, cy) = self.pixel(i, size as f32);
            let colour = self.colour(i);
            for dy in -reach..=reach {
                for dx in -reach..=reach {
                    let (px, py) = (cx as isize + dx, cy as isize + dy);
                    if px < 0 || py < 0 || px >= side as isize || py >= side as isize {
                        continue;
                    }
                    let (ox, oy) = (px as f32 + 0.5 - cx, py as f32 + 0.5 - cy);
                    // Soft edge: coverage falls from 1 to 0 over the last pixel of the radius.
                    let coverage =
                        (radius + 0.5 - (ox * ox + oy * oy).sqrt()).clamp(0.0, 1.0) * 0.85;
                    if coverage <= 0.0 {
                        continue;
                    }
                    let at = (py as usize * side + px as usize) * 3;
                    for c in 0..3 {
                        let old = f32::from(pixels[at + c]);
                        pixels[at + c] =
                            (old + (f32::from(colour[c]) - old) * coverage).round() as u8;
                    }
                }
            }
        }
        let mut encoder = png::Encoder::new(out, size, size);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(io::Error::other)?;
        writer.write_image_data(&pixels).map_err(io::Error::other)?;
        writer.finish().map_err(io::Error::other)
    }

    /// Writes an SVG with one circle per feature (hover shows the feature and cluster) and a
    /// legend naming the largest clusters: `legend[i]` is the text for cluster i.
    pub fn write_svg(&self, size: u32, legend: &[String], out: &mut impl Write) -> io::Result<()> {
        let legend_width = if legend.is_empty() { 0 } else { 360 };
        writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{size}" viewBox="0 0 {w} {size}" font-family="sans-serif" font-size="12">"#,
            w = size + legend_width
        )?;
        writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#)?;
        let radius = self.radius();
        for i in (0..self.x.len())
            .filter(|&i| !self.alive[i])
            .chain((0..self.x.len()).filter(|&i| self.alive[i]))
        {
            let (cx, cy) = self.pixel(i, size as f32);
            let [r, g, b] = self.colour(i);
            writeln!(
                out,
                r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="{radius}" fill="rgb({r},{g},{b})" fill-opacity="0.85"><title>feature {i}, cluster {}</title></circle>"#,
                self.cluster[i]
            )?;
        }
        for (id, text) in legend.iter().enumerate() {
            let [r, g, b] = PALETTE[id % PALETTE.len()];
            let y = 24 + id * 20;
            writeln!(
                out,
                r#"<circle cx="{}" cy="{}" r="6" fill="rgb({r},{g},{b})"/><text x="{}" y="{}">{}</text>"#,
                size + 16,
                y,
                size + 28,
                y + 4,
                escape(text)
            )?;
        }
        writeln!(out, "</svg>")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_decodes_with_coloured_dots_where_the_points_are() {
        let picture = MapPicture {
            x: &[0.0, 1.0],
            y: &[0.0, 1.0],
            cluster: &[0, 1],
            alive: &[true, true],
        };
        let mut bytes = Vec::new();
        picture.write_png(100, &mut bytes).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut pixels).unwrap();
        assert_eq!((info.width, info.height), (100, 100));
        let at = |x: usize, y: usize| &pixels[(y * 100 + x) * 3..(y * 100 + x) * 3 + 3];
        // Point 0 is bottom-left (blue), point 1 top-right (orange), the centre is white.
        assert!(at(3, 96)[2] > at(3, 96)[0], "{:?}", at(3, 96));
        assert!(at(96, 3)[0] > at(96, 3)[2], "{:?}", at(96, 3));
        assert_eq!(at(50, 50), &[255, 255, 255]);
    }

    #[test]
    fn svg_has_a_circle_per_point_and_an_escaped_legend() {
        let picture = MapPicture {
            x: &[0.2, 0.5, 0.9],
            y: &[0.1, 0.5, 0.3],
            cluster: &[0, 0, 1],
            alive: &[true, true, false],
        };
        let mut bytes = Vec::new();
        picture
            .write_svg(200, &["0 (2): a<b".into()], &mut bytes)
            .unwrap();
        let svg = String::from_utf8(bytes).unwrap();
        assert_eq!(svg.matches("<circle").count(), 4);
        assert!(svg.contains("a&lt;b"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }
}
