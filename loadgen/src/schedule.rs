//! What one execution segment of an executor does, as k6 plans it: the
//! VU counts of ramping-vus over time, the start times of arrival-rate
//! iterations, and the VUs and iterations of the other executors. With the
//! full segment (`0:1`) these are the unsegmented plan; summed over every
//! segment of a sequence they are the unsegmented plan too.

use std::time::Duration;

use crate::segment::Tuple;

/// `duration:target` of `--stages`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stage {
    pub duration: Duration,
    pub target: u64,
}

/// From `at` on, `vus` VUs run (k6's `ExecutionStep`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VuStep {
    pub at: Duration,
    pub vus: u64,
}

/// k6's striped VU cursor (`SegmentedIndex`): `scaled` VUs of this segment
/// are the global VUs 1..=`unscaled`.
struct VuCursor<'a> {
    tuple: &'a Tuple,
    scaled: u64,
    unscaled: u64,
}

impl VuCursor<'_> {
    fn go_to(&mut self, global: u64) {
        (self.scaled, self.unscaled) = self.tuple.go_to(global);
    }

    fn next(&mut self) {
        self.unscaled = self.tuple.nth_index(self.scaled) + 1;
        self.scaled += 1;
    }

    fn prev(&mut self) {
        self.scaled -= 1;
        self.unscaled = match self.scaled {
            0 => 0,
            n => self.tuple.nth_index(n - 1) + 1,
        };
    }
}

/// `total · part / whole` in nanoseconds, truncated as k6's integer maths.
fn fraction_of(total: Duration, part: i128, whole: i128) -> Duration {
    let nanos = total.as_nanos() as i128 * part / whole;
    Duration::from_nanos(nanos.max(0) as u64)
}

/// The ramping-vus plan of this segment (k6's `getRawExecutionSteps` with
/// a final step to 0): each step is when the *global* VU count crosses a
/// VU this segment holds, so the segments' steps add up to the global ones.
pub fn vu_steps(start_vus: u64, stages: &[Stage], tuple: &Tuple) -> Vec<VuStep> {
    let mut steps = raw_vu_steps(start_vus, stages, tuple);
    if steps[steps.len() - 1].vus != 0 {
        let end = stages.iter().map(|s| s.duration).sum();
        steps.push(VuStep { at: end, vus: 0 });
    }
    steps
}

/// [`vu_steps`] without the final drop to 0.
fn raw_vu_steps(start_vus: u64, stages: &[Stage], tuple: &Tuple) -> Vec<VuStep> {
    let mut cursor = VuCursor {
        tuple,
        scaled: 0,
        unscaled: 0,
    };
    cursor.go_to(start_vus);
    let mut steps = vec![VuStep {
        at: Duration::ZERO,
        vus: cursor.scaled,
    }];
    let mut add = |at: Duration, vus: u64| {
        if steps[steps.len() - 1].vus != vus {
            steps.push(VuStep { at, vus });
        }
    };
    let mut from = start_vus as i128;
    let mut end = Duration::ZERO;
    for stage in stages {
        let target = stage.target as i128;
        end += stage.duration;
        let diff = target - from;
        if diff == 0 {
            continue;
        }
        if stage.duration.is_zero() {
            cursor.go_to(stage.target);
            add(end, cursor.scaled);
        } else if cursor.unscaled as i128 > target {
            // Down: a VU leaves when the line reaches the VU below it.
            while cursor.unscaled as i128 > target {
                let before_end = target - cursor.unscaled as i128 + 1;
                add(
                    end.saturating_sub(fraction_of(stage.duration, before_end, diff)),
                    cursor.scaled - 1,
                );
                cursor.prev();
            }
        } else {
            // Up: VU n starts when the line reaches n.
            while cursor.unscaled as i128 <= target {
                let before_end = target - cursor.unscaled as i128;
                add(
                    end.saturating_sub(fraction_of(stage.duration, before_end, diff)),
                    cursor.scaled,
                );
                cursor.next();
            }
        }
        from = target;
    }
    steps
}

/// The planned VUs at `t`.
pub fn planned_vus(steps: &[VuStep], t: Duration) -> u64 {
    steps
        .iter()
        .take_while(|s| s.at <= t)
        .last()
        .map_or(0, |s| s.vus)
}

/// The start times of this segment's iterations of an arrival-rate
/// executor, in order, until the executor's end.
pub struct ArrivalTimes {
    /// The executor's sequence re-split by its max VUs, as k6 does.
    tuple: Option<Tuple>,
    next: u64,
    shape: Shape,
}

enum Shape {
    /// Iteration `i` at `i / rate`.
    Constant { per_second: f64, duration: Duration },
    /// Iteration `i` when the area under the rate reaches `i + 1`.
    Ramping {
        start_per_second: f64,
        /// (duration, rate per second at its end).
        stages: Vec<(Duration, f64)>,
    },
}

impl Shape {
    fn time_of(&self, global: u64) -> Option<Duration> {
        match self {
            Shape::Constant {
                per_second,
                duration,
            } => {
                let at = Duration::from_secs_f64(global as f64 / per_second);
                (at < *duration).then_some(at)
            }
            Shape::Ramping {
                start_per_second,
                stages,
            } => {
                // k6's `cal`, in seconds.
                let wanted = (global + 1) as f64;
                let (mut done, mut from, mut stage_start) = (0.0, *start_per_second, 0.0);
                for &(duration, to) in stages {
                    let d = duration.as_secs_f64();
                    let area = d * ((to - from) / 2.0 + from);
                    if wanted <= done + area {
                        let need = wanted - done;
                        let x = if from == to {
                            need / to
                        } else {
                            (from * d
                                - (d * (from * from * d + 2.0 * need * (to - from)))
                                    .max(0.0)
                                    .sqrt())
                                / (from - to)
                        };
                        return Some(Duration::from_secs_f64(stage_start + x.max(0.0)));
                    }
                    done += area;
                    from = to;
                    stage_start += d;
                }
                None
            }
        }
    }
}

impl ArrivalTimes {
    /// `per_second` iterations a second for `duration` (k6's
    /// constant-arrival-rate): iteration `i` at `i / per_second`. `segment`
    /// deals the iterations; None: this segment has none.
    pub fn constant(per_second: f64, duration: Duration, segment: Option<Tuple>) -> Self {
        ArrivalTimes {
            tuple: segment,
            next: 0,
            shape: Shape::Constant {
                per_second,
                duration,
            },
        }
    }

    /// A rate that goes linearly from each stage's start rate to its end
    /// rate (per second), k6's ramping-arrival-rate: iteration `i` when the
    /// number of iterations due reaches `i + 1`.
    pub fn ramping(
        start_per_second: f64,
        stages: Vec<(Duration, f64)>,
        segment: Option<Tuple>,
    ) -> Self {
        ArrivalTimes {
            tuple: segment,
            next: 0,
            shape: Shape::Ramping {
                start_per_second,
                stages,
            },
        }
    }
}

impl Iterator for ArrivalTimes {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let tuple = self.tuple.as_ref()?;
        let global = tuple.nth_index(self.next);
        self.next += 1;
        self.shape.time_of(global)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::{Segment, Sequence};
    use rand::{Rng, SeedableRng};

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn stage(s: u64, target: u64) -> Stage {
        Stage {
            duration: secs(s),
            target,
        }
    }

    fn steps(list: &[(u64, u64)]) -> Vec<VuStep> {
        list.iter()
            .map(|&(ms, vus)| VuStep {
                at: Duration::from_millis(ms),
                vus,
            })
            .collect()
    }

    fn all_of(seq: &str) -> Vec<Tuple> {
        let seq = Sequence::parse(seq).unwrap();
        seq.segments()
            .iter()
            .map(|s| Tuple::new(*s, Some(&seq)).unwrap())
            .collect()
    }

    /// k6's ramping-vus doc example: 0 → 10 → 0 over 10 s each, whole
    /// and in two halves (the X and Y charts).
    #[test]
    fn ramp_up_and_down_as_k6_charts() {
        let stages = [stage(10, 10), stage(10, 0)];
        let whole = vu_steps(0, &stages, &Tuple::full());
        let mut want: Vec<(u64, u64)> = vec![(0, 0)];
        want.extend((1..=10).map(|v| (v * 1000, v)));
        want.extend((1..=10).map(|i| (10_000 + i * 1000, 10 - i)));
        assert_eq!(whole, steps(&want));
        let halves = all_of("0,1/2,1");
        let x = vu_steps(0, &stages, &halves[0]);
        let y = vu_steps(0, &stages, &halves[1]);
        // X holds the odd global VUs, Y the even ones.
        assert_eq!(
            x,
            steps(&[
                (0, 0),
                (1000, 1),
                (3000, 2),
                (5000, 3),
                (7000, 4),
                (9000, 5),
                (12_000, 4),
                (14_000, 3),
                (16_000, 2),
                (18_000, 1),
                (20_000, 0)
            ])
        );
        assert_eq!(
            y,
            steps(&[
                (0, 0),
                (2000, 1),
                (4000, 2),
                (6000, 3),
                (8000, 4),
                (10_000, 5),
                (11_000, 4),
                (13_000, 3),
                (15_000, 2),
                (17_000, 1),
                (19_000, 0)
            ])
        );
    }

    /// k6's TestRampingVUsRun config: start 5, hold, drop to 3 at once.
    #[test]
    fn instant_stage_and_start_vus() {
        let stages = [stage(1, 5), stage(0, 3), stage(1, 3)];
        assert_eq!(
            vu_steps(5, &stages, &Tuple::full()),
            steps(&[(0, 5), (1000, 3), (2000, 0)])
        );
    }

    fn tuple(seg: &str, seq: &str) -> Tuple {
        let seq = (!seq.is_empty()).then(|| Sequence::parse(seq).unwrap());
        Tuple::new(Segment::parse(seg).unwrap(), seq.as_ref()).unwrap()
    }

    fn in_seconds(list: &[(u64, u64)]) -> Vec<VuStep> {
        list.iter()
            .map(|&(s, vus)| VuStep { at: secs(s), vus })
            .collect()
    }

    /// k6's TestRampingVUsExecutionTupleTests: one stage plan, raw steps
    /// per segment (with and without a sequence).
    #[test]
    #[rustfmt::skip]
    fn raw_steps_per_segment_as_k6() {
        let stages: Vec<Stage> = [
            (2, 6), (5, 1), (4, 5), (4, 1), (3, 4), (2, 4), (0, 1), (3, 1),
            (0, 5), (3, 5), (0, 0), (2, 2), (2, 0), (4, 4),
        ]
        .iter()
        .map(|&(d, t)| stage(d, t))
        .collect();
        let thirds_alone: &[(u64, u64)] = &[
            (0, 1), (1, 2), (4, 1), (7, 0), (8, 1), (11, 2), (12, 1), (15, 0),
            (16, 1), (20, 0), (23, 2), (26, 0), (28, 1), (29, 0), (32, 1),
        ];
        type Case<'a> = (&'a str, &'a str, &'a [(u64, u64)]);
        let cases: &[Case] = &[
            ("", "", &[
                (0, 4), (1, 5), (2, 6), (3, 5), (4, 4), (5, 3), (6, 2), (7, 1),
                (8, 2), (9, 3), (10, 4), (11, 5), (12, 4), (13, 3), (14, 2), (15, 1),
                (16, 2), (17, 3), (18, 4), (20, 1), (23, 5), (26, 0), (27, 1), (28, 2),
                (29, 1), (30, 0), (31, 1), (32, 2), (33, 3), (34, 4),
            ]),
            ("0:1/3", "", thirds_alone),
            ("0:1/3", "0,1/3,1", thirds_alone),
            ("1/3:2/3", "", thirds_alone),
            ("2/3:1", "", thirds_alone),
            ("0:1/3", "0,1/3,2/3,1", &[
                (0, 2), (5, 1), (10, 2), (13, 1), (18, 2), (20, 1), (23, 2), (26, 0),
                (27, 1), (30, 0), (31, 1), (34, 2),
            ]),
            ("1/3:2/3", "0,1/3,2/3,1", thirds_alone),
            ("2/3:1", "0,1/3,2/3,1", &[
                (0, 1), (2, 2), (3, 1), (6, 0), (9, 1), (14, 0), (17, 1), (20, 0),
                (23, 1), (26, 0), (33, 1),
            ]),
        ];
        for &(seg, seq, want) in cases {
            assert_eq!(
                raw_vu_steps(4, &stages, &tuple(seg, seq)),
                in_seconds(want),
                "{seg} in {seq}"
            );
        }
    }

    /// k6's TestRampingVUsGetRawExecutionStepsCornerCases.
    #[test]
    #[rustfmt::skip]
    fn raw_steps_corner_cases_as_k6() {
        let up_down = [stage(2, 2), stage(2, 0), stage(2, 2), stage(2, 0)];
        type Case<'a> = (&'a str, u64, Vec<Stage>, &'a str, &'a str, &'a [(u64, u64)]);
        let cases: Vec<Case> = vec![
            ("going up then down straight away", 2, vec![stage(0, 5), stage(2, 3)], "", "",
                &[(0, 2), (0, 5), (1, 4), (2, 3)]),
            ("jump up then go up again", 3, vec![stage(2, 5)], "", "",
                &[(0, 3), (1, 4), (2, 5)]),
            ("up down up down", 0, up_down.to_vec(), "", "",
                &[(0, 0), (1, 1), (2, 2), (3, 1), (4, 0), (5, 1), (6, 2), (7, 1), (8, 0)]),
            ("in half", 0, up_down.to_vec(), "0:1/2", "",
                &[(0, 0), (1, 1), (4, 0), (5, 1), (8, 0)]),
            ("in the other half", 0, up_down.to_vec(), "1/2:1", "",
                &[(0, 0), (2, 1), (3, 0), (6, 1), (7, 0)]),
            ("with nothing", 0, up_down.to_vec(), "2/3:1", "0,1/3,2/3,1", &[(0, 0)]),
            ("with funky sequence", 0, up_down.to_vec(), "0:1/3", "0,1/3,1/2,2/3,1",
                &[(0, 0), (1, 1), (4, 0), (5, 1), (8, 0)]),
            ("strange", 0, vec![stage(20, 20), stage(30, 30)], "0:0.3", "0,0.3,0.6,0.9,1",
                &[(0, 0), (1, 1), (5, 2), (8, 3), (11, 4), (15, 5), (18, 6), (23, 7), (35, 8), (44, 9)]),
            ("more up and down", 0, vec![stage(5, 5), stage(5, 0)], "", "",
                &[(0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 4), (7, 3), (8, 2), (9, 1), (10, 0)]),
        ];
        for (name, start, stages, seg, seq, want) in cases {
            assert_eq!(
                raw_vu_steps(start, &stages, &tuple(seg, seq)),
                in_seconds(want),
                "{name}"
            );
        }
    }

    fn random_stages(rng: &mut impl Rng) -> (u64, Vec<Stage>) {
        let start = rng.gen_range(0..6);
        let stages = (0..rng.gen_range(1..5))
            .map(|_| Stage {
                duration: Duration::from_millis(rng.gen_range(0..4) * 1500),
                target: rng.gen_range(0..25),
            })
            .collect();
        (start, stages)
    }

    fn random_sequence(rng: &mut impl Rng) -> String {
        let den = rng.gen_range(2..13u64);
        let mut points: Vec<u64> = (1..den).filter(|_| rng.gen_bool(0.4)).collect();
        points.insert(0, 0);
        points.push(den);
        points
            .iter()
            .map(|p| format!("{p}/{den}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The segments' VU counts add up to the global count at every moment.
    #[test]
    fn property_segment_vu_steps_add_up_to_the_whole() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(6565);
        for _ in 0..200 {
            let (start, stages) = random_stages(&mut rng);
            let seq = random_sequence(&mut rng);
            let whole = vu_steps(start, &stages, &Tuple::full());
            let parts: Vec<Vec<VuStep>> = all_of(&seq)
                .iter()
                .map(|t| vu_steps(start, &stages, t))
                .collect();
            let mut moments: Vec<Duration> = whole.iter().map(|s| s.at).collect();
            moments.extend(parts.iter().flatten().map(|s| s.at));
            for t in moments {
                let sum: u64 = parts.iter().map(|p| planned_vus(p, t)).sum();
                assert_eq!(
                    sum,
                    planned_vus(&whole, t),
                    "{seq} {start} {stages:?} at {t:?}"
                );
            }
        }
    }

    fn arrival(rate: f64, stages: Option<Vec<Stage>>, segment: &Tuple) -> ArrivalTimes {
        match stages {
            None => ArrivalTimes::constant(rate, secs(10), Some(segment.clone())),
            Some(stages) => ArrivalTimes::ramping(
                rate,
                stages
                    .iter()
                    .map(|s| (s.duration, s.target as f64))
                    .collect(),
                Some(segment.clone()),
            ),
        }
    }

    #[test]
    fn arrival_times_as_k6() {
        // Constant 4/s for 10 s: 40 iterations, every 250 ms from 0.
        let times: Vec<Duration> = arrival(4.0, None, &Tuple::full()).collect();
        assert_eq!(times.len(), 40);
        assert_eq!(times[1], Duration::from_millis(250));
        // Ramping 0 → 10/s over 2 s then 10/s for 1 s: areas 10 and 10;
        // iteration i when the area reaches i + 1, the first at √0.4 s.
        let stages = Some(vec![stage(2, 10), stage(1, 10)]);
        let times: Vec<Duration> = arrival(0.0, stages, &Tuple::full()).collect();
        assert_eq!(times.len(), 20);
        assert!((times[0].as_secs_f64() - 0.4f64.sqrt()).abs() < 1e-9);
        assert!((times[9].as_secs_f64() - 2.0).abs() < 1e-9);
        assert!((times[10].as_secs_f64() - 2.1).abs() < 1e-9);
    }

    /// The segments' iteration start times, together, are the whole's.
    #[test]
    fn property_segment_arrivals_union_is_the_whole() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(104);
        for _ in 0..100 {
            let seq = random_sequence(&mut rng);
            let (rate, stages) = if rng.gen_bool(0.5) {
                (rng.gen_range(1..30) as f64, None)
            } else {
                let (start, stages) = random_stages(&mut rng);
                (start as f64, Some(stages))
            };
            let mut whole: Vec<Duration> = arrival(rate, stages.clone(), &Tuple::full()).collect();
            let mut union: Vec<Duration> = all_of(&seq)
                .iter()
                .flat_map(|t| arrival(rate, stages.clone(), t))
                .collect();
            whole.sort();
            union.sort();
            assert_eq!(union, whole, "{seq} {rate} {stages:?}");
        }
    }
}
