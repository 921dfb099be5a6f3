//! The PNG: latency distribution per level, and throughput and latency
//! percentiles against concurrency.

use crate::report::LevelResult;
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

const FONT: &str = "sans-serif";

/// plotters draws text with ab_glyph from fonts registered by name; the
/// font is compiled in (the `dejavu` crate), so no system font library or
/// font file is needed at run time.
fn register_font() -> Result<(), String> {
    static ONCE: Once = Once::new();
    let mut r = Ok(());
    ONCE.call_once(|| {
        r = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
            .map_err(|_| "cannot load the embedded DejaVu Sans font".to_string());
    });
    r
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
    RGBColor(140, 86, 75),
    RGBColor(127, 127, 127),
];

fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;
type R<T = ()> = Result<T, String>;

fn err<E: std::fmt::Display>(e: E) -> String {
    format!("drawing the plot: {e}")
}

/// Milliseconds or seconds, whichever reads better for values up to `max_ms`.
fn unit(max_ms: f64) -> (&'static str, f64) {
    if max_ms >= 2000.0 {
        ("s", 1e-3)
    } else {
        ("ms", 1.0)
    }
}

fn no_data(area: &Area, caption: &str) -> R {
    area.draw(&Text::new(format!("{caption}: no data"), (40, 40), (FONT, 20).into_font())).map_err(err)
}

/// Empirical CDF of each level's sample, as steps.
fn cdf(area: &Area, caption: &str, series: &[(String, &[f64])]) -> R {
    let max = series.iter().flat_map(|(_, s)| s.iter()).fold(0f64, |m, v| m.max(*v));
    if max <= 0.0 {
        return no_data(area, caption);
    }
    let (u, k) = unit(max);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..max * k * 1.05, 0f64..1.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .max_light_lines(2)
        .x_desc(format!("latency ({u})"))
        .y_desc("fraction of queries")
        .label_style((FONT, 14))
        .draw()
        .map_err(err)?;
    for (i, (name, s)) in series.iter().enumerate() {
        if s.is_empty() {
            continue;
        }
        let mut v: Vec<f64> = s.iter().map(|x| x * k).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len() as f64;
        let mut pts = vec![(0.0, 0.0)];
        for (j, x) in v.iter().enumerate() {
            pts.push((*x, j as f64 / n));
            pts.push((*x, (j + 1) as f64 / n));
        }
        let c = color(i);
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))
            .map_err(err)?
            .label(format!("{name} (n = {})", v.len()))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}

/// Histogram of each level's sample (share of its queries per bin), drawn
/// as outlines so that levels can overlap.
fn histogram(area: &Area, caption: &str, series: &[(String, &[f64])]) -> R {
    let all = || series.iter().flat_map(|(_, s)| s.iter().copied());
    let (lo, hi) = (all().fold(f64::INFINITY, f64::min), all().fold(0f64, f64::max));
    if !lo.is_finite() || hi <= 0.0 {
        return no_data(area, caption);
    }
    let (u, k) = unit(hi);
    let bins = 30usize;
    let (lo, hi) = (lo * k, hi * k);
    let width = ((hi - lo) / bins as f64).max(1e-9);
    let mut shares = Vec::new();
    let mut top = 0f64;
    for (_, s) in series {
        let mut h = vec![0f64; bins];
        for v in s.iter() {
            let b = (((v * k) - lo) / width).floor() as usize;
            h[b.min(bins - 1)] += 1.0;
        }
        let n = s.len().max(1) as f64;
        h.iter_mut().for_each(|x| *x /= n);
        top = h.iter().fold(top, |m, v| m.max(*v));
        shares.push(h);
    }
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d((lo - width).max(0.0)..hi + width, 0f64..(top * 1.15).max(0.01))
        .map_err(err)?;
    chart
        .configure_mesh()
        .max_light_lines(2)
        .x_desc(format!("latency ({u}), {bins} bins of {width:.3} {u}"))
        .y_desc("share of the level's queries")
        .label_style((FONT, 14))
        .draw()
        .map_err(err)?;
    for (i, ((name, s), h)) in series.iter().zip(&shares).enumerate() {
        if s.is_empty() {
            continue;
        }
        let mut pts = vec![(lo, 0.0)];
        for (b, share) in h.iter().enumerate() {
            let x0 = lo + b as f64 * width;
            pts.push((x0, *share));
            pts.push((x0 + width, *share));
        }
        pts.push((hi, 0.0));
        let c = color(i);
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))
            .map_err(err)?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}

/// Lines with labelled points against concurrency.
fn versus_concurrency(area: &Area, caption: &str, y_desc: &str, lines: &[(String, Vec<(f64, f64)>)]) -> R {
    let max_c = lines.iter().flat_map(|(_, p)| p.iter().map(|p| p.0)).fold(1f64, f64::max);
    let max_y = lines.iter().flat_map(|(_, p)| p.iter().map(|p| p.1)).fold(0f64, f64::max);
    if max_y <= 0.0 {
        return no_data(area, caption);
    }
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..max_c + 1.0, 0f64..max_y * 1.2)
        .map_err(err)?;
    chart
        .configure_mesh()
        .max_light_lines(2)
        .x_desc("concurrent clients")
        .y_desc(y_desc)
        .x_labels((max_c as usize + 2).min(17))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| axis_value(*v, max_y))
        .label_style((FONT, 14))
        .draw()
        .map_err(err)?;
    // Value labels go above the highest line's points, below the lowest
    // line's and to the left for the others, so that close values of
    // different lines (p95 and p99, say) stay readable.
    let mean = |p: &[(f64, f64)]| p.iter().map(|q| q.1).sum::<f64>() / p.len().max(1) as f64;
    let rank = |i: usize| lines.iter().filter(|(_, p)| mean(p) < mean(&lines[i].1)).count();
    for (i, (name, pts)) in lines.iter().enumerate() {
        let c = color(i);
        let offset = match rank(i) {
            r if r + 1 == lines.len() => (6, -20),
            0 => (6, 6),
            _ => (-46, -8),
        };
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
            .map_err(err)?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|&(x, y)| {
                EmptyElement::at((x, y))
                    + Circle::new((0, 0), 4, c.filled())
                    + Text::new(crate::report::fmt_ms(y), offset, (FONT, 14).into_font())
            }))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}

/// Axis labels with as many decimals as the axis' range needs.
fn axis_value(v: f64, max: f64) -> String {
    match max {
        m if m >= 10.0 => format!("{v:.0}"),
        m if m >= 1.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}

/// Writes the 2×2 figure to `path`.
pub fn plot(path: &Path, title: &str, levels: &[LevelResult], tickets: bool) -> R {
    register_font()?;
    let root = BitMapBackend::new(path, (1500, 1050)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, (FONT, 22)).map_err(err)?;
    let panels = root.split_evenly((2, 2));
    let name = |l: &LevelResult| format!("{} client{}", l.concurrency, if l.concurrency == 1 { "" } else { "s" });
    let lat: Vec<(String, &[f64])> = levels.iter().map(|l| (name(l), l.latencies_ms.as_slice())).collect();
    let what = if tickets { "online query on a ticket" } else { "whole query (one-shot Infer)" };
    cdf(&panels[0], &format!("Latency CDF: {what}"), &lat)?;
    if tickets {
        let t: Vec<(String, &[f64])> = levels.iter().map(|l| (name(l), l.ticket_latencies_ms.as_slice())).collect();
        cdf(&panels[1], "Ticket creation latency CDF (CreateTicket)", &t)?;
    } else {
        histogram(&panels[1], "Latency histogram", &lat)?;
    }
    let c = |l: &LevelResult| l.concurrency as f64;
    let mut thr =
        vec![("predictions / hour".to_string(), levels.iter().map(|l| (c(l), l.predictions_per_hour)).collect())];
    if tickets {
        thr.push((
            "tickets created / hour".to_string(),
            levels.iter().map(|l| (c(l), l.tickets_per_hour.unwrap_or(0.0))).collect(),
        ));
    }
    versus_concurrency(&panels[2], "Throughput vs concurrency", "per hour", &thr)?;
    let max_ms = levels.iter().filter_map(|l| l.latency_ms.as_ref().map(|s| s.max)).fold(0f64, f64::max);
    let (u, k) = unit(max_ms);
    let pct = |f: fn(&crate::report::LatencyStats) -> f64| -> Vec<(f64, f64)> {
        levels.iter().filter_map(|l| l.latency_ms.as_ref().map(|s| (c(l), f(s) * k))).collect()
    };
    let lines = vec![
        ("p50".to_string(), pct(|s| s.p50)),
        ("p95".to_string(), pct(|s| s.p95)),
        ("p99".to_string(), pct(|s| s.p99)),
    ];
    versus_concurrency(
        &panels[3],
        &format!("Latency percentiles vs concurrency ({what})"),
        &format!("latency ({u})"),
        &lines,
    )?;
    root.present().map_err(err)
}
