//! The coverage curve: the share of concepts covered against their frequency (log axis), one
//! line with points per dictionary size. The SVG has axes, ticks, labels and a legend; the PNG
//! is drawn pixel by pixel (encoded by the `png` crate) with the same lines, points, axes and
//! ticks, and a legend of colour swatches in member order, smallest dictionary on top (it has
//! no text: there is no font here).

use std::io::{self, Write};

use monoscope_artifacts::coverage::FrequencyBin;

/// Distinct colours for the members, smallest dictionary first: the map's ten strong ones.
const PALETTE: &[[u8; 3]] = monoscope_cluster::picture::PALETTE.split_at(10).0;
const AXIS: [u8; 3] = [60, 60, 60];

/// What to draw.
#[derive(Debug, Clone, Copy)]
pub struct CoveragePlot<'a> {
    /// Legend entries, one per member, in the order of `covered_fraction`.
    pub members: &'a [String],
    pub bins: &'a [FrequencyBin],
    pub width: u32,
    pub height: u32,
}

/// The plotting area inside the margins: left, top, right, bottom in pixels.
struct Frame {
    left: f64,
    top: f64,
    right: f64,
    bottom: f64,
    log_low: f64,
    log_high: f64,
}

impl Frame {
    fn x(&self, frequency: f64) -> f64 {
        let t = (frequency.log10() - self.log_low) / (self.log_high - self.log_low);
        self.left + t * (self.right - self.left)
    }

    fn y(&self, fraction: f64) -> f64 {
        self.bottom - fraction.clamp(0.0, 1.0) * (self.bottom - self.top)
    }

    /// Powers of ten inside the axis (the ticks).
    fn decades(&self) -> Vec<i32> {
        (self.log_low.ceil() as i32..=self.log_high.floor() as i32).collect()
    }
}

fn colour(member: usize) -> [u8; 3] {
    PALETTE[member % PALETTE.len()]
}

impl CoveragePlot<'_> {
    fn frame(&self) -> Frame {
        let (low, high) = match (self.bins.first(), self.bins.last()) {
            (Some(first), Some(last)) => (first.low, last.high),
            _ => (1.0, 10.0),
        };
        Frame {
            left: 70.0,
            top: 20.0,
            right: f64::from(self.width) - 200.0,
            bottom: f64::from(self.height) - 50.0,
            log_low: low.log10(),
            log_high: high.log10().max(low.log10() + 1e-9),
        }
    }

    /// Each member's points: the bin's geometric centre and the share covered.
    fn points(&self, frame: &Frame, member: usize) -> Vec<(f64, f64)> {
        self.bins
            .iter()
            .map(|b| {
                let centre = (b.low * b.high).sqrt();
                (
                    frame.x(centre),
                    frame.y(b.covered_fraction.get(member).copied().unwrap_or(0.0)),
                )
            })
            .collect()
    }

    pub fn write_svg(&self, out: &mut impl Write) -> io::Result<()> {
        let f = self.frame();
        writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#,
            w = self.width,
            h = self.height
        )?;
        writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#)?;
        writeln!(
            out,
            r#"<path d="M{l} {t} V{b} H{r}" fill="none" stroke="rgb(60,60,60)"/>"#,
            l = f.left,
            t = f.top,
            b = f.bottom,
            r = f.right
        )?;
        for k in 0..=4 {
            let fraction = f64::from(k) / 4.0;
            let y = f.y(fraction);
            writeln!(
                out,
                r#"<line x1="{a}" y1="{y:.1}" x2="{l}" y2="{y:.1}" stroke="rgb(60,60,60)"/><text x="{tx}" y="{ty:.1}" text-anchor="end">{fraction}</text>"#,
                a = f.left - 5.0,
                l = f.left,
                tx = f.left - 8.0,
                ty = y + 4.0
            )?;
        }
        for decade in f.decades() {
            let x = f.x(10f64.powi(decade));
            writeln!(
                out,
                r#"<line x1="{x:.1}" y1="{b}" x2="{x:.1}" y2="{b5}" stroke="rgb(60,60,60)"/><text x="{x:.1}" y="{ty}" text-anchor="middle">{label}</text>"#,
                b = f.bottom,
                b5 = f.bottom + 5.0,
                ty = f.bottom + 18.0,
                label = format_power(decade)
            )?;
        }
        writeln!(
            out,
            r#"<text x="{x:.1}" y="{y}" text-anchor="middle">concept frequency (occurrences per million tokens)</text>"#,
            x = (f.left + f.right) / 2.0,
            y = f.bottom + 40.0
        )?;
        writeln!(
            out,
            r#"<text transform="translate(18 {y:.1}) rotate(-90)" text-anchor="middle">fraction of concepts covered</text>"#,
            y = (f.top + f.bottom) / 2.0
        )?;
        for (m, name) in self.members.iter().enumerate() {
            let [r, g, b] = colour(m);
            let points = self.points(&f, m);
            let path: Vec<String> = points
                .iter()
                .map(|(x, y)| format!("{x:.1},{y:.1}"))
                .collect();
            writeln!(
                out,
                r#"<polyline points="{}" fill="none" stroke="rgb({r},{g},{b})" stroke-width="2"/>"#,
                path.join(" ")
            )?;
            for ((x, y), bin) in points.iter().zip(self.bins) {
                writeln!(
                    out,
                    r#"<circle cx="{x:.1}" cy="{y:.1}" r="4" fill="rgb({r},{g},{b})"><title>{}: {:.0}% of {} concepts at {:.3}–{:.3} per million</title></circle>"#,
                    escape(name),
                    100.0 * bin.covered_fraction.get(m).copied().unwrap_or(0.0),
                    bin.concepts,
                    bin.low,
                    bin.high
                )?;
            }
            let ly = f.top + 10.0 + 20.0 * m as f64;
            writeln!(
                out,
                r#"<rect x="{x}" y="{y:.1}" width="12" height="12" fill="rgb({r},{g},{b})"/><text x="{tx}" y="{ty:.1}">{}</text>"#,
                escape(name),
                x = f.right + 20.0,
                y = ly - 6.0,
                tx = f.right + 38.0,
                ty = ly + 4.0
            )?;
        }
        writeln!(out, "</svg>")
    }

    pub fn write_png(&self, out: &mut impl Write) -> io::Result<()> {
        let (w, h) = (self.width as usize, self.height as usize);
        let mut canvas = Canvas {
            pixels: vec![255u8; w * h * 3],
            width: w,
            height: h,
        };
        let f = self.frame();
        canvas.line((f.left, f.top), (f.left, f.bottom), 1.0, AXIS);
        canvas.line((f.left, f.bottom), (f.right, f.bottom), 1.0, AXIS);
        for k in 0..=4 {
            let y = f.y(f64::from(k) / 4.0);
            canvas.line((f.left - 5.0, y), (f.left, y), 1.0, AXIS);
        }
        for decade in f.decades() {
            let x = f.x(10f64.powi(decade));
            canvas.line((x, f.bottom), (x, f.bottom + 5.0), 1.0, AXIS);
        }
        for m in 0..self.members.len() {
            let points = self.points(&f, m);
            for pair in points.windows(2) {
                canvas.line(pair[0], pair[1], 2.0, colour(m));
            }
            for &p in &points {
                canvas.disc(p, 4.0, colour(m));
            }
            let ly = f.top + 10.0 + 20.0 * m as f64;
            for dy in 0..12 {
                canvas.line(
                    (f.right + 20.0, ly - 6.0 + f64::from(dy)),
                    (f.right + 32.0, ly - 6.0 + f64::from(dy)),
                    1.0,
                    colour(m),
                );
            }
        }
        let mut encoder = png::Encoder::new(out, self.width, self.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(io::Error::other)?;
        writer
            .write_image_data(&canvas.pixels)
            .map_err(io::Error::other)?;
        writer.finish().map_err(io::Error::other)
    }
}

/// `10^k` as a plain number where that is short.
fn format_power(k: i32) -> String {
    match k {
        -3..=6 => format!("{}", 10f64.powi(k)),
        _ => format!("1e{k}"),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An RGB picture with anti-aliasing-free lines and discs.
struct Canvas {
    pixels: Vec<u8>,
    width: usize,
    height: usize,
}

impl Canvas {
    fn set(&mut self, x: f64, y: f64, colour: [u8; 3]) {
        let (px, py) = (x.round(), y.round());
        if px < 0.0 || py < 0.0 || px >= self.width as f64 || py >= self.height as f64 {
            return;
        }
        let at = (py as usize * self.width + px as usize) * 3;
        self.pixels[at..at + 3].copy_from_slice(&colour);
    }

    fn disc(&mut self, (cx, cy): (f64, f64), radius: f64, colour: [u8; 3]) {
        let reach = radius.ceil() as i64;
        for dy in -reach..=reach {
            for dx in -reach..=reach {
                let (dx, dy) = (dx as f64, dy as f64);
                if dx * dx + dy * dy <= radius * radius {
                    self.set(cx + dx, cy + dy, colour);
                }
            }
        }
    }

    /// A line of `thickness` pixels: discs stepped along it at most a pixel apart.
    fn line(&mut self, from: (f64, f64), to: (f64, f64), thickness: f64, colour: [u8; 3]) {
        let length = ((to.0 - from.0).powi(2) + (to.1 - from.1).powi(2)).sqrt();
        let steps = length.ceil().max(1.0) as usize;
        for s in 0..=steps {
            let t = s as f64 / steps as f64;
            let p = (from.0 + t * (to.0 - from.0), from.1 + t * (to.1 - from.1));
            if thickness <= 1.0 {
                self.set(p.0, p.1, colour);
            } else {
                self.disc(p, thickness / 2.0, colour);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bins() -> Vec<FrequencyBin> {
        vec![
            FrequencyBin {
                low: 10.0,
                high: 31.6,
                concepts: 4,
                covered_fraction: vec![0.25, 0.5],
            },
            FrequencyBin {
                low: 100.0,
                high: 316.2,
                concepts: 2,
                covered_fraction: vec![1.0, 1.0],
            },
        ]
    }

    #[test]
    fn svg_has_a_line_and_points_per_member_and_a_legend() {
        let names = vec!["small <64>".to_string(), "main".to_string()];
        let bins = bins();
        let plot = CoveragePlot {
            members: &names,
            bins: &bins,
            width: 700,
            height: 400,
        };
        let mut bytes = Vec::new();
        plot.write_svg(&mut bytes).unwrap();
        let svg = String::from_utf8(bytes).unwrap();
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 4);
        assert!(svg.contains("small &lt;64&gt;"));
        assert!(svg.contains(">100<"), "a tick at 100 per million");
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn png_has_member_colours_where_the_points_are() {
        let names = vec!["a".to_string(), "b".to_string()];
        let bins = bins();
        let plot = CoveragePlot {
            members: &names,
            bins: &bins,
            width: 700,
            height: 400,
        };
        let mut bytes = Vec::new();
        plot.write_png(&mut bytes).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut pixels).unwrap();
        assert_eq!((info.width, info.height), (700, 400));
        let f = plot.frame();
        let at = |(x, y): (f64, f64)| {
            let i = (y.round() as usize * 700 + x.round() as usize) * 3;
            [pixels[i], pixels[i + 1], pixels[i + 2]]
        };
        // Member 0's first point (a quarter covered) is blue; the corner is white.
        assert_eq!(at(plot.points(&f, 0)[0]), PALETTE[0]);
        assert_eq!(at(plot.points(&f, 1)[0]), PALETTE[1]);
        assert_eq!(at((2.0, 2.0)), [255, 255, 255]);
    }
}
