//! The funnel chart: a PNG drawn in-process with plotters and the bundled DejaVu Sans font, so nothing is
//! needed from the system at run time.

use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;

const WIDTH: u32 = 900;
const HEIGHT: u32 = 420;
const FONT: &str = "lastmile-sans";

static REGISTER: Once = Once::new();

fn register_font() {
    REGISTER.call_once(|| {
        if plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_err() {
            tracing::error!("the bundled font could not be loaded");
        }
    });
}

#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("drawing failed: {0}")]
    Draw(String),
    #[error("PNG encoding failed: {0}")]
    Encode(#[from] png::EncodingError),
}

/// Horizontal bars, one per funnel step (label, count), top to bottom; returns the PNG bytes.
pub fn funnel_png(title: &str, steps: &[(String, u64)]) -> Result<Vec<u8>, ChartError> {
    register_font();
    let mut rgb = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT)).into_drawing_area();
        let draw = |e: &dyn std::fmt::Display| ChartError::Draw(e.to_string());
        root.fill(&WHITE).map_err(|e| draw(&e))?;
        let max = steps.iter().map(|(_, n)| i64::try_from(*n).unwrap_or(i64::MAX / 2)).max().unwrap_or(0).max(1);
        // Room on the right of the longest bar for its label.
        let max = max + max / 2;
        let n = steps.len().max(1) as i32;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 22))
            .margin(16)
            .x_label_area_size(28)
            .y_label_area_size(10)
            .build_cartesian_2d(0i64..max + max / 8 + 1, (0..(n - 1).max(1)).into_segmented())
            .map_err(|e| draw(&e))?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .disable_y_axis()
            .label_style((FONT, 15))
            .draw()
            .map_err(|e| draw(&e))?;
        let colour = RGBColor(47, 110, 186);
        chart
            .draw_series(steps.iter().enumerate().map(|(i, (_, count))| {
                let row = n - 1 - i as i32;
                let mut bar = Rectangle::new(
                    [(0, SegmentValue::Exact(row)), (*count as i64, SegmentValue::Exact(row + 1))],
                    colour.filled(),
                );
                bar.set_margin(5, 5, 0, 0);
                bar
            }))
            .map_err(|e| draw(&e))?;
        chart
            .draw_series(steps.iter().enumerate().map(|(i, (_, count))| {
                let row = n - 1 - i as i32;
                // Each row says what it counts, right after its bar: nothing to line up with an axis.
                let (label, _) = &steps[i];
                Text::new(
                    format!("  {label}: {count}"),
                    (*count as i64, SegmentValue::CenterOf(row)),
                    (FONT, 16).into_font(),
                )
            }))
            .map_err(|e| draw(&e))?;
        root.present().map_err(|e| draw(&e))?;
    }
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, WIDTH, HEIGHT);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&rgb)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png_of_the_funnel() {
        let steps: Vec<(String, u64)> = [("Registered", 12), ("Scoped", 10), ("In production", 3)]
            .iter()
            .map(|(l, n)| (l.to_string(), *n))
            .collect();
        let png = funnel_png("Funnel", &steps).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let decoder = png::Decoder::new(std::io::Cursor::new(&png));
        let reader = decoder.read_info().unwrap();
        assert_eq!((reader.info().width, reader.info().height), (900, 420));
        // Not blank: the bars are drawn in their colour.
        let mut reader = reader;
        let mut buf = vec![0; reader.output_buffer_size()];
        reader.next_frame(&mut buf).unwrap();
        assert!(buf.chunks(3).any(|p| p == [47, 110, 186]));
        if let Ok(dir) = std::env::var("LASTMILE_CHART_SAMPLE") {
            std::fs::write(format!("{dir}/sample.png"), &png).unwrap();
        }
        let empty = funnel_png("Funnel", &[]).unwrap();
        assert!(!empty.is_empty());
    }
}
