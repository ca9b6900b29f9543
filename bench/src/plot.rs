//! The results plot: egress packet rate against subscribers, one line per system, for the
//! fan-out scenarios (solid) and the meetings (thin, triangles), as SVG.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use crate::runner::Outcome;
use crate::scenario::Kind;
use crate::sut::SystemKind;

fn color(k: SystemKind) -> RGBColor {
    match k {
        SystemKind::Ceiling => RGBColor(120, 120, 120),
        SystemKind::PrismUring => RGBColor(200, 40, 40),
        SystemKind::PrismMmsg => RGBColor(230, 140, 20),
        SystemKind::Conventional => RGBColor(40, 90, 200),
        SystemKind::Rtpengine => RGBColor(40, 160, 80),
        SystemKind::PrismUringSrtpGcm => RGBColor(150, 40, 160),
        SystemKind::PrismUringSrtpCm => RGBColor(90, 30, 60),
        SystemKind::PrismRelayed => RGBColor(200, 90, 120),
        SystemKind::CeilingMmsg => RGBColor(170, 170, 170),
        SystemKind::CeilingAfXdp => RGBColor(60, 60, 60),
        SystemKind::PrismAfXdp => RGBColor(20, 160, 170),
    }
}

fn points(outcomes: &[Outcome], sys: SystemKind, kind: Kind) -> Vec<(f64, f64)> {
    let mut v: Vec<(f64, f64)> = outcomes
        .iter()
        .filter(|o| o.system == sys && o.kind == kind && o.max_egress_pps > 0.0)
        .map(|o| (o.subscribers as f64, o.max_egress_pps / 1000.0))
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

/// Writes the plot to `path`.
pub fn write(outcomes: &[Outcome], title: &str, path: &Path) -> Result<()> {
    let ymax = outcomes
        .iter()
        .map(|o| o.max_egress_pps / 1000.0)
        .fold(10.0f64, f64::max)
        * 1.15;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d((5f64..2000f64).log_scale(), 0f64..ymax)
        .map_err(|e| anyhow!("{e:?}"))?;
    chart
        .configure_mesh()
        .x_desc("subscribers (fan-out 1→N: solid; meeting N×N: thin, triangles)")
        .y_desc("egress kpps at ≤ 0.1% loss, p50 ≤ 50 ms")
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    for sys in SystemKind::ALL {
        let c = color(sys);
        let fan = points(outcomes, sys, Kind::Fanout);
        if !fan.is_empty() {
            chart
                .draw_series(LineSeries::new(fan.clone(), c.stroke_width(3)))
                .map_err(|e| anyhow!("{e:?}"))?
                .label(sys.label())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3))
                });
            chart
                .draw_series(fan.iter().map(|&p| Circle::new(p, 4, c.filled())))
                .map_err(|e| anyhow!("{e:?}"))?;
        }
        let meet = points(outcomes, sys, Kind::Meeting);
        if !meet.is_empty() {
            chart
                .draw_series(LineSeries::new(meet.clone(), c.stroke_width(1)))
                .map_err(|e| anyhow!("{e:?}"))?;
            chart
                .draw_series(meet.iter().map(|&p| TriangleMarker::new(p, 5, c.filled())))
                .map_err(|e| anyhow!("{e:?}"))?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    root.present().map_err(|e| anyhow!("{e:?}"))?;
    Ok(())
}
