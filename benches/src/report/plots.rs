//! The SVG plots: per backend, throughput and p99 latency against the level conflict rate.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;
use stockguard_testkit::Backend;

use super::results::Results;
use super::view::BackendView;
use crate::case::Variant;

/// Writes the two plots per backend.
pub fn write_plots(results: &Results, dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut written = Vec::new();
    for backend in Backend::ALL {
        let view = BackendView::new(backend, &results.cases);
        let levels = view.levels_by_conflict();
        if levels.is_empty() {
            continue;
        }
        let mut throughput: BTreeMap<Variant, Vec<(f64, f64)>> = BTreeMap::new();
        let mut p99: BTreeMap<Variant, Vec<(f64, f64)>> = BTreeMap::new();
        for (level, requesters, rate) in &levels {
            for (variant, case) in view.at(level, *requesters).into_iter().flatten() {
                let x = rate * 100.0;
                throughput
                    .entry(*variant)
                    .or_default()
                    .push((x, case.successes_per_s.max(0.1)));
                p99.entry(*variant)
                    .or_default()
                    .push((x, (case.latency_us_p99 as f64 / 1000.0).max(0.01)));
            }
        }
        let name = format!("throughput_{backend}.svg");
        plot(
            &dir.join(&name),
            &format!("{backend}: successful deductions/s vs conflict rate"),
            "successful deductions/s (log)",
            &throughput,
        )?;
        written.push(name);
        let name = format!("p99_{backend}.svg");
        plot(
            &dir.join(&name),
            &format!("{backend}: p99 latency of successful deductions vs conflict rate"),
            "p99 latency, ms (log)",
            &p99,
        )?;
        written.push(name);
    }
    Ok(written)
}

fn plot(
    path: &Path,
    title: &str,
    y_label: &str,
    series: &BTreeMap<Variant, Vec<(f64, f64)>>,
) -> anyhow::Result<()> {
    let values = series.values().flatten().map(|p| p.1);
    let (min, max) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (y_low, y_high) = (min / 2.0, max * 2.0);
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..100f64, (y_low..y_high).log_scale())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("level conflict rate, % (optimistic version misses)")
        .y_desc(y_label)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for (index, (variant, points)) in series.iter().enumerate() {
        let color = Palette99::pick(index).to_rgba();
        let mut points = points.clone();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let dashed = matches!(variant, Variant::Raw(_));
        let style = if dashed {
            color.stroke_width(1)
        } else {
            color.stroke_width(2)
        };
        chart
            .draw_series(LineSeries::new(points.clone(), style))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(variant.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
