//! The console's traffic chart: exchanges per time slot, answered and failed, drawn as
//! SVG bars on the server (no script).

use lintas_proto::opmon::v1::OpRecord;

/// Height of the bars' area, in the SVG's units.
const HEIGHT: u64 = 100;
/// Width of one slot.
const SLOT: u64 = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bar {
    pub x: u64,
    pub w: u64,
    pub ok: u64,
    pub failed: u64,
    /// Failed on top of answered, both from the bottom at y = HEIGHT.
    pub ok_y: u64,
    pub ok_h: u64,
    pub failed_y: u64,
    pub failed_h: u64,
    /// The slot's start, UTC.
    pub label: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chart {
    pub width: u64,
    pub bars: Vec<Bar>,
    pub first: String,
    pub last: String,
    pub total: u64,
    pub failed: u64,
    /// The busiest slot's count.
    pub peak: u64,
}

/// `records` counted in `slots` equal slots of [from, to) (Unix ms): answered (`Ok`)
/// and failed, scaled so the busiest slot fills the height.
pub fn chart(records: &[OpRecord], from: i64, to: i64, slots: usize) -> Chart {
    let slots = slots.max(1);
    let span = (to - from).max(1);
    let mut counts = vec![(0u64, 0u64); slots];
    for r in records {
        if r.time_unix_ms < from || r.time_unix_ms >= to {
            continue;
        }
        let i = ((r.time_unix_ms - from) as i128 * slots as i128 / span as i128) as usize;
        let slot = &mut counts[i.min(slots - 1)];
        if r.code == "Ok" {
            slot.0 += 1;
        } else {
            slot.1 += 1;
        }
    }
    let peak = counts
        .iter()
        .map(|(ok, failed)| ok + failed)
        .max()
        .unwrap_or(0);
    let scale = |n: u64| {
        if peak == 0 {
            0
        } else {
            (n * HEIGHT).div_ceil(peak)
        }
    };
    let at = |i: usize| lintas_globalconf::iso8601((from + span * i as i64 / slots as i64) / 1000);
    let bars = counts
        .iter()
        .enumerate()
        .map(|(i, &(ok, failed))| {
            let (ok_h, failed_h) = (scale(ok), scale(failed));
            Bar {
                x: i as u64 * SLOT,
                w: SLOT - 1,
                ok,
                failed,
                ok_y: HEIGHT - ok_h,
                ok_h,
                failed_y: HEIGHT.saturating_sub(ok_h + failed_h),
                failed_h,
                label: at(i),
            }
        })
        .collect();
    Chart {
        width: slots as u64 * SLOT,
        bars,
        first: at(0),
        last: at(slots),
        total: counts.iter().map(|(ok, failed)| ok + failed).sum(),
        failed: counts.iter().map(|(_, failed)| failed).sum(),
        peak,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ms: i64, code: &str) -> OpRecord {
        OpRecord {
            time_unix_ms: ms,
            code: code.into(),
            ..Default::default()
        }
    }

    #[test]
    fn records_fall_in_their_slots_and_scale_to_the_peak() {
        let records = [
            rec(0, "Ok"),
            rec(999, "Ok"),
            rec(1000, "Unavailable"),
            rec(3999, "Ok"),
            rec(4000, "Ok"), // past the end
            rec(-1, "Ok"),   // before the start
        ];
        let c = chart(&records, 0, 4000, 4);
        let counts: Vec<(u64, u64)> = c.bars.iter().map(|b| (b.ok, b.failed)).collect();
        assert_eq!(counts, [(2, 0), (0, 1), (0, 0), (1, 0)]);
        assert_eq!((c.total, c.failed, c.peak, c.width), (4, 1, 2, 40));
        // The busiest slot fills the height; half of it, half.
        assert_eq!((c.bars[0].ok_h, c.bars[0].ok_y), (100, 0));
        assert_eq!((c.bars[1].failed_h, c.bars[1].failed_y), (50, 50));
        assert_eq!(c.bars[2].ok_h + c.bars[2].failed_h, 0);
        // An empty range draws empty bars, never divides by zero.
        let empty = chart(&[], 10, 10, 0);
        assert_eq!((empty.bars.len(), empty.total, empty.peak), (1, 0, 0));
    }
}
