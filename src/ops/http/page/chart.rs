//! Charts as inline SVG, drawn here from numbers the page already read: no JavaScript library, and
//! they render with scripts off. Colours come from CSS classes (`page.css`), never from `style`
//! attributes, which the Content-Security-Policy forbids; every number is an attribute, so the
//! output needs no escaping beyond the labels, which are ours.

use std::fmt::Write;

use crate::store::CampaignProgress;
use crate::store::status_page::RatePoint;

/// One part of the stacked bar: its CSS class, its label and its count.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Segment {
    pub class: &'static str,
    pub label: &'static str,
    pub count: i64,
}

/// A campaign's recipients by status, in the order a reader follows them: done first.
pub fn segments(p: &CampaignProgress) -> Vec<Segment> {
    let part = |class, label, count| Segment {
        class,
        label,
        count,
    };
    vec![
        part("sent", "sent", p.sent),
        part("bounced", "bounced", p.bounced),
        part("postal", "postal", p.postal),
        part("failed", "failed", p.failed),
        part("cancelled", "cancelled", p.cancelled),
        part("deferred", "deferred", p.deferred),
        part("queued", "queued", p.queued),
    ]
}

/// A horizontal bar, 100 units wide, each segment as wide as its share (a title gives its count).
pub fn stacked_bar(parts: &[Segment]) -> String {
    let total: i64 = parts.iter().map(|s| s.count.max(0)).sum();
    let mut svg = String::from(
        "<svg class=\"bar\" viewBox=\"0 0 100 4\" preserveAspectRatio=\"none\" role=\"img\" \
         aria-label=\"recipients by status\">",
    );
    if total == 0 {
        svg.push_str("<rect class=\"empty\" x=\"0\" y=\"0\" width=\"100\" height=\"4\"/>");
    }
    let mut x = 0.0;
    for s in parts.iter().filter(|s| s.count > 0 && total > 0) {
        let width = s.count as f64 * 100.0 / total as f64;
        let _ = write!(
            svg,
            "<rect class=\"{}\" x=\"{x:.3}\" y=\"0\" width=\"{width:.3}\" height=\"4\">\
             <title>{}: {}</title></rect>",
            s.class, s.label, s.count
        );
        x += width;
    }
    svg.push_str("</svg>");
    svg
}

/// A chart of one window: `points` (intervals of `step` seconds, absent ones empty) from
/// `end - span` to `end`, sent stacked under failed, per minute.
pub struct RateChart<'a> {
    pub title: &'a str,
    pub points: &'a [RatePoint],
    pub end: i64,
    pub span: i64,
    pub step: i64,
}

const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 120.0;
/// Room above the bars for the scale's label.
const TOP: f64 = 24.0;

impl RateChart<'_> {
    /// The SVG, with the peak rate as the scale's label and a `<title>` per bar.
    pub fn svg(&self) -> String {
        let start = self.end - self.span;
        let slots = (self.span / self.step).max(1) as usize;
        let per_minute = 60.0 / self.step as f64;
        let mut sent = vec![0i64; slots];
        let mut failed = vec![0i64; slots];
        for p in self.points {
            let slot = (p.start - start) / self.step;
            if let Ok(i) = usize::try_from(slot)
                && i < slots
            {
                sent[i] += p.sent;
                failed[i] += p.failed;
            }
        }
        let peak = sent
            .iter()
            .zip(&failed)
            .map(|(s, f)| s + f)
            .max()
            .unwrap_or(0)
            .max(1) as f64;
        let bar = WIDTH / slots as f64;
        let mut svg = format!(
            "<svg class=\"rate\" viewBox=\"0 0 {WIDTH} {h}\" role=\"img\" aria-label=\"{t}\">\
             <text class=\"axis\" x=\"4\" y=\"18\">{peak_rate:.0}/min</text>\
             <text class=\"axis\" x=\"4\" y=\"{h2}\">-{t}</text>\
             <text class=\"axis\" x=\"{w2}\" y=\"{h2}\" text-anchor=\"end\">now</text>",
            h = TOP + HEIGHT + 24.0,
            t = self.title,
            peak_rate = peak * per_minute,
            h2 = TOP + HEIGHT + 20.0,
            w2 = WIDTH - 4.0,
        );
        for (i, (s, f)) in sent.iter().zip(&failed).enumerate() {
            if s + f == 0 {
                continue;
            }
            let x = i as f64 * bar;
            let hs = *s as f64 / peak * HEIGHT;
            let hf = *f as f64 / peak * HEIGHT;
            let _ = write!(
                svg,
                "<g><title>{s} sent, {f} failed in {step}s</title>\
                 <rect class=\"sent\" x=\"{x:.2}\" y=\"{ys:.2}\" width=\"{bw:.2}\" height=\"{hs:.2}\"/>",
                step = self.step,
                ys = TOP + HEIGHT - hs,
                bw = (bar - 0.5).max(0.5),
            );
            if *f > 0 {
                let _ = write!(
                    svg,
                    "<rect class=\"failed\" x=\"{x:.2}\" y=\"{yf:.2}\" width=\"{bw:.2}\" height=\"{hf:.2}\"/>",
                    yf = TOP + HEIGHT - hs - hf,
                    bw = (bar - 0.5).max(0.5),
                );
            }
            svg.push_str("</g>");
        }
        svg.push_str("</svg>");
        svg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_is_as_wide_as_the_counts_and_has_no_style_attribute() {
        let parts = [
            Segment {
                class: "sent",
                label: "sent",
                count: 3,
            },
            Segment {
                class: "queued",
                label: "queued",
                count: 1,
            },
            Segment {
                class: "failed",
                label: "failed",
                count: 0,
            },
        ];
        let svg = stacked_bar(&parts);
        assert!(
            svg.contains("class=\"sent\" x=\"0.000\" y=\"0\" width=\"75.000\""),
            "{svg}"
        );
        assert!(
            svg.contains("class=\"queued\" x=\"75.000\" y=\"0\" width=\"25.000\""),
            "{svg}"
        );
        assert!(!svg.contains("failed"), "{svg}");
        assert!(!svg.contains("style="), "{svg}");
        assert!(stacked_bar(&[]).contains("class=\"empty\""));
    }

    #[test]
    fn the_rate_chart_places_each_interval_and_scales_to_the_peak() {
        let points = [
            RatePoint {
                start: 1000,
                attempts: 10,
                sent: 10,
                failed: 0,
            },
            RatePoint {
                start: 1060,
                attempts: 6,
                sent: 4,
                failed: 1,
            },
            RatePoint {
                start: 500,
                attempts: 99,
                sent: 99,
                failed: 0,
            },
        ];
        let chart = RateChart {
            title: "1h",
            points: &points,
            end: 1120,
            span: 120,
            step: 60,
        };
        let svg = chart.svg();
        // Two slots of 300 units; the first is the peak (full height), the older point is outside.
        assert!(svg.contains(">10/min<"), "{svg}");
        assert!(
            svg.contains("<title>10 sent, 0 failed in 60s</title>"),
            "{svg}"
        );
        assert!(
            svg.contains(
                "class=\"sent\" x=\"0.00\" y=\"24.00\" width=\"299.50\" height=\"120.00\""
            ),
            "{svg}"
        );
        assert!(
            svg.contains("class=\"failed\" x=\"300.00\" y=\"84.00\""),
            "{svg}"
        );
        assert_eq!(svg.matches("<g>").count(), 2, "{svg}");
        assert_eq!(svg.matches("class=\"failed\"").count(), 1, "{svg}");
    }
}
