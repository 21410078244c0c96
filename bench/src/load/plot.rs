//! SVG plots of a load run: latency CDF, latency and throughput over time, relay RSS over time.

use std::path::Path;

use plotters::prelude::*;

pub struct Series<'a> {
    pub name: &'a str,
    pub points: Vec<(f64, f64)>,
}

const COLORS: [RGBColor; 4] = [BLUE, RED, GREEN, MAGENTA];

fn bounds(series: &[Series<'_>]) -> (f64, f64, f64) {
    let pts = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0.0f64);
    for (x, y) in pts {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y1 = y1.max(*y);
    }
    if x0 > x1 {
        (0.0, 1.0, 1.0)
    } else {
        (
            x0,
            if x1 > x0 { x1 } else { x0 + 1.0 },
            if y1 > 0.0 { y1 * 1.1 } else { 1.0 },
        )
    }
}

fn draw_lines<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series<'_>],
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let (x0, x1, y1) = bounds(series);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, 0.0..y1)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?
            .label(s.name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(())
}

/// One chart per file.
pub fn lines(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series<'_>],
) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    draw_lines(&root, title, x_label, y_label, series)?;
    root.present().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(())
}

/// Two charts stacked in one file.
pub fn stacked(
    path: &Path,
    top: (&str, &str, &[Series<'_>]),
    bottom: (&str, &str, &[Series<'_>]),
    x_label: &str,
) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (900, 800)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let (a, b) = root.split_vertically(400);
    draw_lines(&a, top.0, x_label, top.1, top.2)?;
    draw_lines(&b, bottom.0, x_label, bottom.1, bottom.2)?;
    root.present().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(())
}

/// The empirical CDF of sorted latencies (ms), thinned to at most 2,000 points.
pub fn cdf(sorted_ms: &[f64]) -> Vec<(f64, f64)> {
    let n = sorted_ms.len();
    if n == 0 {
        return Vec::new();
    }
    let step = n.div_ceil(2_000).max(1);
    let mut out: Vec<(f64, f64)> = (0..n)
        .step_by(step)
        .map(|i| (sorted_ms[i], (i + 1) as f64 / n as f64))
        .collect();
    out.push((sorted_ms[n - 1], 1.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_svg() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.svg");
        let ms: Vec<f64> = (1..=5000).map(|i| i as f64 / 100.0).collect();
        lines(
            &path,
            "cdf",
            "ms",
            "fraction",
            &[Series {
                name: "all",
                points: cdf(&ms),
            }],
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("<svg") && text.contains("cdf"));
        stacked(
            &path,
            (
                "a",
                "ms",
                &[Series {
                    name: "p50",
                    points: vec![(0.0, 1.0), (1.0, 2.0)],
                }],
            ),
            (
                "b",
                "msg/s",
                &[Series {
                    name: "sent",
                    points: vec![],
                }],
            ),
            "s",
        )
        .unwrap();
    }
}
