//! What `lintas bench` makes of its runs: the median and spread of each figure over the
//! rounds, ratios paired within each round, the goals, and the time each side of the bus
//! spends in each stage of an exchange (read from the servers' metrics).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::bench_load::Measured;

/// A path calls take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Route {
    Direct,
    Relay,
    Bus,
    RestDirect,
    RestBus,
    StreamDirect,
    StreamBus,
}

impl Route {
    /// Every path, in the order they run and are reported.
    pub const ALL: [Route; 7] = [
        Route::Direct,
        Route::Relay,
        Route::Bus,
        Route::RestDirect,
        Route::RestBus,
        Route::StreamDirect,
        Route::StreamBus,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Route::Direct => "direct",
            Route::Relay => "relay",
            Route::Bus => "bus",
            Route::RestDirect => "rest-direct",
            Route::RestBus => "rest-bus",
            Route::StreamDirect => "stream-direct",
            Route::StreamBus => "stream-bus",
        }
    }

    /// Through both security servers.
    pub fn through_bus(self) -> bool {
        matches!(self, Route::Bus | Route::RestBus | Route::StreamBus)
    }

    /// Messages on streams: a call is one message, the stage times are per stream.
    pub fn streams(self) -> bool {
        matches!(self, Route::StreamDirect | Route::StreamBus)
    }
}

/// The goals: bus/direct throughput at 64 in flight, and latency the bus adds at 1.
pub const GOAL_RATIO: f64 = 0.25;
pub const GOAL_ADDED_P50_MS: f64 = 1.0;

#[derive(Serialize)]
pub struct Run {
    pub path: &'static str,
    pub in_flight: usize,
    pub round: usize,
    #[serde(flatten)]
    pub measured: Measured,
    /// Through the bus: the mean time per exchange of each side in all and in each
    /// stage (from the servers' `lintas_exchange_duration_seconds` and
    /// `lintas_exchange_stage_duration_seconds`), ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stages_ms: Option<BTreeMap<String, f64>>,
}

/// Sums and counts of the servers' exchange and stage durations, by "side stage" (the
/// whole exchange as stage "total").
pub fn times(texts: &[String]) -> BTreeMap<String, (f64, f64)> {
    let mut times: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    let label = |line: &str, name: &str| -> Option<String> {
        let start = line.find(&format!("{name}=\""))? + name.len() + 2;
        let len = line[start..].find('"')?;
        Some(line[start..start + len].to_owned())
    };
    for line in texts.iter().flat_map(|t| t.lines()) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let stage = if series.starts_with("lintas_exchange_stage_duration_seconds_") {
            label(series, "stage")
        } else if series.starts_with("lintas_exchange_duration_seconds_") {
            Some("total".to_owned())
        } else {
            continue;
        };
        let (Some(side), Some(stage)) = (label(series, "side"), stage) else {
            continue;
        };
        let entry = times.entry(format!("{side} {stage}")).or_default();
        if series.contains("_seconds_sum{") {
            entry.0 += value;
        } else if series.contains("_seconds_count{") {
            entry.1 += value;
        }
    }
    times
}

/// The mean of each time between two readings of [`times`], ms.
pub fn mean_ms(
    before: &BTreeMap<String, (f64, f64)>,
    after: &BTreeMap<String, (f64, f64)>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter_map(|(key, (sum, count))| {
            let (sum0, count0) = before.get(key).copied().unwrap_or_default();
            let n = count - count0;
            (n > 0.0).then(|| (key.clone(), (sum - sum0) / n * 1e3))
        })
        .collect()
}

/// Median, least and most of a figure over the rounds.
#[derive(Debug, Clone, Copy, Serialize)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(mut values: Vec<f64>) -> Spread {
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = match n {
            0 => f64::NAN,
            _ if n % 2 == 1 => values[n / 2],
            _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
        };
        Spread {
            median,
            min: values.first().copied().unwrap_or(f64::NAN),
            max: values.last().copied().unwrap_or(f64::NAN),
        }
    }
}

#[derive(Serialize)]
struct PathSummary {
    path: &'static str,
    #[serde(skip)]
    route: Route,
    in_flight: usize,
    calls_per_sec: Spread,
    p50_ms: Spread,
    p99_ms: Spread,
    /// Median over the rounds, microseconds, by process.
    cpu_us_per_exchange: BTreeMap<String, f64>,
    /// Through the bus: median over the rounds of the mean time per exchange of each
    /// side and stage, ms.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    stages_ms: BTreeMap<String, f64>,
}

#[derive(Serialize)]
pub struct Summary {
    paths: Vec<PathSummary>,
    /// Each round's ratio of throughputs (path over path, at the calls in flight named).
    ratios: BTreeMap<String, Spread>,
    /// Each round's bus p50 minus direct p50 at 1 in flight, ms (when both measured).
    added_p50_ms_at_1: Option<Spread>,
}

impl Summary {
    /// Whether the median meets each goal; `None` when a goal was not measured.
    fn goals(&self) -> (Option<bool>, Option<bool>) {
        (
            self.ratios
                .get("bus/direct at 64")
                .map(|r| r.median >= GOAL_RATIO),
            self.added_p50_ms_at_1
                .map(|a| a.median <= GOAL_ADDED_P50_MS),
        )
    }

    pub fn goals_met(&self) -> Option<bool> {
        match self.goals() {
            (Some(a), Some(b)) => Some(a && b),
            _ => None,
        }
    }
}

pub fn summarise(runs: &[Run], in_flights: &[usize]) -> Summary {
    let of = |path: &str, in_flight: usize| -> Vec<&Run> {
        runs.iter()
            .filter(|r| r.path == path && r.in_flight == in_flight)
            .collect()
    };
    let mut paths = Vec::new();
    for &in_flight in in_flights {
        for route in Route::ALL {
            let path = route.name();
            let rs = of(path, in_flight);
            if rs.is_empty() {
                continue;
            }
            let spread =
                |f: fn(&Measured) -> f64| Spread::of(rs.iter().map(|r| f(&r.measured)).collect());
            let mut cpu: BTreeMap<String, Vec<f64>> = BTreeMap::new();
            let mut stages: BTreeMap<String, Vec<f64>> = BTreeMap::new();
            for r in &rs {
                for (name, us) in &r.measured.cpu_us_per_exchange {
                    cpu.entry(name.clone()).or_default().push(*us);
                }
                for (name, ms) in r.stages_ms.iter().flatten() {
                    stages.entry(name.clone()).or_default().push(*ms);
                }
            }
            let medians = |m: BTreeMap<String, Vec<f64>>| {
                m.into_iter()
                    .map(|(name, v)| (name, Spread::of(v).median))
                    .collect()
            };
            paths.push(PathSummary {
                path,
                route,
                in_flight,
                calls_per_sec: spread(|m| m.calls_per_sec),
                p50_ms: spread(|m| m.p50_ms),
                p99_ms: spread(|m| m.p99_ms),
                cpu_us_per_exchange: medians(cpu),
                stages_ms: medians(stages),
            });
        }
    }
    // Paired within each round, so that a slow moment of the machine counts against
    // both sides of a ratio.
    let paired = |a: &str, b: &str, in_flight: usize, f: fn(&Measured, &Measured) -> f64| {
        Spread::of(
            of(a, in_flight)
                .iter()
                .zip(of(b, in_flight))
                .map(|(x, y)| f(&x.measured, &y.measured))
                .collect(),
        )
    };
    let ratio = |x: &Measured, y: &Measured| x.calls_per_sec / y.calls_per_sec;
    let measured = |a: &str, b: &str, in_flight: usize| {
        !of(a, in_flight).is_empty() && !of(b, in_flight).is_empty()
    };
    let mut ratios = BTreeMap::new();
    for &in_flight in in_flights {
        for (a, b) in [
            ("bus", "direct"),
            ("relay", "direct"),
            ("bus", "relay"),
            ("rest-bus", "rest-direct"),
            ("stream-bus", "stream-direct"),
        ] {
            if measured(a, b, in_flight) {
                ratios.insert(
                    format!("{a}/{b} at {in_flight}"),
                    paired(a, b, in_flight, ratio),
                );
            }
        }
    }
    Summary {
        paths,
        ratios,
        added_p50_ms_at_1: measured("bus", "direct", 1)
            .then(|| paired("bus", "direct", 1, |x, y| x.p50_ms - y.p50_ms)),
    }
}

/// "name value, name value" with `decimals` decimals.
pub fn listed(figures: &BTreeMap<String, f64>, decimals: usize) -> String {
    figures
        .iter()
        .map(|(name, v)| format!("{name} {v:.decimals$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn print_summary(summary: &Summary, rounds: usize) {
    println!("median over {rounds} round(s) [least–most]:");
    for p in &summary.paths {
        let cpu = listed(&p.cpu_us_per_exchange, 0);
        println!(
            "{:<13} {:>3} in flight: {:>7.0} calls/s [{:.0}–{:.0}], p50 {:.3} ms, p99 {:.3} ms; CPU µs per exchange: {}",
            p.path,
            p.in_flight,
            p.calls_per_sec.median,
            p.calls_per_sec.min,
            p.calls_per_sec.max,
            p.p50_ms.median,
            p.p99_ms.median,
            cpu
        );
        if !p.stages_ms.is_empty() {
            let per = match p.route.streams() {
                true => "stream",
                false => "exchange",
            };
            println!("        mean ms per {per}: {}", listed(&p.stages_ms, 3));
        }
    }
    for (name, r) in &summary.ratios {
        println!("{name}: {:.3} [{:.3}–{:.3}]", r.median, r.min, r.max);
    }
    if let Some(a) = summary.added_p50_ms_at_1 {
        println!(
            "added p50 latency at 1 in flight (bus minus direct): {:.3} ms [{:.3}–{:.3}]",
            a.median, a.min, a.max
        );
    }
    let said = |met: Option<bool>| match met {
        Some(true) => "met",
        Some(false) => "not met",
        None => "not measured",
    };
    let (throughput, latency) = summary.goals();
    println!(
        "goals: bus/direct at 64 in flight ≥ {GOAL_RATIO} ({}), added p50 at 1 ≤ {GOAL_ADDED_P50_MS} ms ({})",
        said(throughput),
        said(latency)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_times_are_read_from_the_servers_metrics() {
        let text = |peer: f64, count: f64| {
            format!(
                "# HELP lintas_exchange_stage_duration_seconds stages\n\
                 lintas_exchange_stage_duration_seconds_sum{{side=\"consumer\",stage=\"peer\"}} {peer}\n\
                 lintas_exchange_stage_duration_seconds_count{{side=\"consumer\",stage=\"peer\"}} {count}\n\
                 lintas_exchange_stage_duration_seconds_bucket{{side=\"consumer\",stage=\"peer\",le=\"0.001\"}} 7\n\
                 lintas_exchange_duration_seconds_sum{{side=\"provider\",service=\"echo.v1.Echo\",method=\"Echo\"}} 0.5\n\
                 lintas_exchange_duration_seconds_count{{side=\"provider\",service=\"echo.v1.Echo\",method=\"Echo\"}} 4\n\
                 lintas_log_records 12\n\
                 not a metric line\n"
            )
        };
        let before = times(&[text(1.0, 100.0)]);
        let after = times(&[text(1.5, 300.0)]);
        assert_eq!(before["consumer peer"], (1.0, 100.0));
        assert_eq!(before.len(), 2, "{before:?}");
        let means = mean_ms(&before, &after);
        assert!((means["consumer peer"] - 2.5).abs() < 1e-9, "{means:?}");
        // No exchange between the readings: no mean.
        assert!(!means.contains_key("provider total"), "{means:?}");
    }

    #[test]
    fn figures_are_listed_by_name_with_the_decimals_asked() {
        let figures = BTreeMap::from([("b".to_owned(), 2.0), ("a".to_owned(), 1.23456)]);
        assert_eq!(listed(&figures, 0), "a 1, b 2");
        assert_eq!(listed(&figures, 3), "a 1.235, b 2.000");
        assert_eq!(listed(&BTreeMap::new(), 3), "");
    }

    #[test]
    fn spreads_give_the_median_and_the_extremes() {
        for (values, median, min, max) in [
            (vec![3.0], 3.0, 3.0, 3.0),
            (vec![5.0, 1.0, 3.0], 3.0, 1.0, 5.0),
            (vec![4.0, 1.0, 3.0, 2.0], 2.5, 1.0, 4.0),
        ] {
            let s = Spread::of(values.clone());
            assert_eq!((s.median, s.min, s.max), (median, min, max), "{values:?}");
        }
        assert!(Spread::of(Vec::new()).median.is_nan());
    }

    fn run(path: &'static str, in_flight: usize, round: usize, rate: f64, p50: f64) -> Run {
        Run {
            path,
            in_flight,
            round,
            measured: Measured {
                calls: rate as usize,
                calls_per_sec: rate,
                p50_ms: p50,
                p99_ms: p50 * 2.0,
                cpu_us_per_exchange: BTreeMap::from([("app".to_owned(), round as f64)]),
            },
            stages_ms: None,
        }
    }

    #[test]
    fn ratios_pair_the_paths_of_each_round_and_judge_the_goals() {
        // Round 2 is a slow moment of the machine for every path alike.
        let mut runs = Vec::new();
        for (round, slow) in [(1, 1.0), (2, 0.5), (3, 1.0)] {
            runs.push(run("direct", 1, round, 5000.0 * slow, 0.2));
            runs.push(run("relay", 1, round, 2000.0 * slow, 0.5));
            runs.push(run("bus", 1, round, 1000.0 * slow, 1.1));
            runs.push(run("direct", 64, round, 30000.0 * slow, 2.0));
            runs.push(run("relay", 64, round, 9000.0 * slow, 7.0));
            runs.push(run("bus", 64, round, 7500.0 * slow, 8.0));
        }
        let summary = summarise(&runs, &[1, 64]);
        let ratio = |name: &str| summary.ratios[name];
        assert!((ratio("bus/direct at 64").median - 0.25).abs() < 1e-9);
        // Paired per round, the slow round does not widen the spread.
        assert!((ratio("bus/direct at 64").max - ratio("bus/direct at 64").min).abs() < 1e-9);
        assert!((ratio("bus/relay at 1").median - 0.5).abs() < 1e-9);
        let bus64 = &summary.paths[5];
        assert_eq!((bus64.path, bus64.in_flight), ("bus", 64));
        assert_eq!(bus64.calls_per_sec.min, 3750.0);
        assert_eq!(bus64.cpu_us_per_exchange["app"], 2.0);
        assert!((summary.added_p50_ms_at_1.unwrap().median - 0.9).abs() < 1e-9);
        assert_eq!(summary.goals_met(), Some(true));
        // Slower by one call a second at 64 in flight: the throughput goal is missed.
        runs[5].measured.calls_per_sec -= 1.0;
        runs[11].measured.calls_per_sec -= 1.0;
        runs[17].measured.calls_per_sec -= 1.0;
        assert_eq!(summarise(&runs, &[1, 64]).goals_met(), Some(false));
        // Without the direct path, no ratio and no goal can be judged.
        runs.retain(|r| r.path != "direct");
        let summary = summarise(&runs, &[1, 64]);
        assert_eq!(summary.ratios.len(), 2, "{:?}", summary.ratios.keys());
        assert_eq!(summary.goals_met(), None);
    }
}
