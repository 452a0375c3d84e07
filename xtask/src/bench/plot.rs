//! Figure 6 as an SVG line plot: kernel ns added per exec against the number of
//! pods, copilot's node set beside one program set per pod.
use bench_results::{Pods, PodsPoint};

const W: f64 = 640.0;
const H: f64 = 360.0;
const LEFT: f64 = 70.0;
const BOTTOM: f64 = 50.0;
const TOP: f64 = 30.0;
const RIGHT: f64 = 160.0;

/// `(pods, ns)` points of one curve of `6_pods`, failed points left out.
fn points(curve: &[PodsPoint]) -> Vec<(f64, f64)> {
    curve
        .iter()
        .filter_map(PodsPoint::measured)
        .filter_map(|c| Some((c.pods as f64, c.added_ns_per_exec?)))
        .collect()
}

/// The SVG, or `None` when the figure has no points.
pub fn fig6(fig: &Pods) -> Option<String> {
    let series = [
        (
            "copilot: one set per node",
            "#1f77b4",
            points(&fig.node_set),
        ),
        ("one set per pod", "#d62728", points(&fig.set_per_pod)),
    ];
    let all: Vec<(f64, f64)> = series.iter().flat_map(|s| s.2.iter().copied()).collect();
    let x_max = all.iter().map(|p| p.0).fold(0.0, f64::max);
    let y_max = all.iter().map(|p| p.1).fold(0.0, f64::max) * 1.1;
    if all.is_empty() || x_max <= 0.0 || y_max <= 0.0 {
        return None;
    }
    let x = |v: f64| LEFT + v / x_max * (W - LEFT - RIGHT);
    let y = |v: f64| H - BOTTOM - v / y_max * (H - BOTTOM - TOP);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{LEFT}\" y=\"18\">Kernel ns added to every exec outside the pods (bpf_stats)</text>\n"
    );
    let axes = format!(
        "<line x1=\"{LEFT}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"black\"/>\n\
         <line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{b}\" stroke=\"black\"/>\n\
         <text x=\"{mid}\" y=\"{xl}\" text-anchor=\"middle\">pods on the node, each with its own copilot</text>\n",
        b = H - BOTTOM,
        r = W - RIGHT,
        mid = (LEFT + W - RIGHT) / 2.0,
        xl = H - 12.0,
    );
    s.push_str(&axes);
    for i in 0..=4 {
        let v = y_max / 4.0 * f64::from(i);
        s.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{v:.0} ns</text>\n",
            LEFT - 6.0,
            y(v) + 4.0
        ));
    }
    let mut ticks: Vec<f64> = all.iter().map(|p| p.0).collect();
    ticks.sort_by(f64::total_cmp);
    ticks.dedup();
    for t in ticks {
        s.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{t:.0}</text>\n",
            x(t),
            H - BOTTOM + 16.0
        ));
    }
    for (i, (name, color, pts)) in series.iter().enumerate() {
        let line: Vec<String> = pts
            .iter()
            .map(|(a, b)| format!("{:.1},{:.1}", x(*a), y(*b)))
            .collect();
        s.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\n",
            line.join(" ")
        ));
        for (a, b) in pts {
            s.push_str(&format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"/>\n",
                x(*a),
                y(*b)
            ));
        }
        let ly = TOP + 20.0 * i as f64;
        s.push_str(&format!(
            "<line x1=\"{lx}\" y1=\"{ly}\" x2=\"{lx2}\" y2=\"{ly}\" stroke=\"{color}\" stroke-width=\"2\"/>\n\
             <text x=\"{tx}\" y=\"{ty}\">{name}</text>\n",
            lx = W - RIGHT + 10.0,
            lx2 = W - RIGHT + 30.0,
            tx = W - RIGHT + 34.0,
            ty = ly + 4.0,
        ));
    }
    s.push_str("</svg>\n");
    Some(s)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn plots_both_curves_and_skips_failed_points() {
        let fig = json!({
            "node_set": [{"pods": 1, "added_ns_per_exec": 100.0}, {"pods": 250, "added_ns_per_exec": 110.0}],
            "set_per_pod": [{"pods": 1, "added_ns_per_exec": 100.0}, {"pods": 10, "error": "E2BIG"}],
        });
        let fig = serde_json::from_value(fig).expect("a figure 6");
        let svg = super::fig6(&fig).expect("points");
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 3);
        assert!(svg.contains(">250<"));
        assert!(super::fig6(&serde_json::from_value(json!({})).expect("a figure 6")).is_none());
    }
}
