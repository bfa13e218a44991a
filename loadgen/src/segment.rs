//! k6's execution segments: how one test is split exactly over many
//! loadgen processes that never talk to each other.
//!
//! A segment `from:to` (0 ≤ from < to ≤ 1) is this process's share of the
//! work; a sequence `0,1/3,2/3,1` lists every process's segment. The
//! sequence is *striped*: the integers 0, 1, 2, … (VU numbers, iteration
//! numbers) are dealt to the segments in a pattern that repeats every `lcd`
//! integers (the least common denominator of the segment lengths), each
//! segment taking its length's share of every cycle, spread as evenly as it
//! can. Scaling a whole number (VUs, iterations) counts the integers below it
//! that a segment holds, so the parts of every segment always add up to the
//! whole. The algorithm and its results are k6's (`lib/execution_segment.go`),
//! so a test split over k6 instances and over loadgen instances splits alike.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

/// A sequence whose striping cycle would be longer than this is refused:
/// the cycle is held in memory (k6 has no limit; 10⁶ is far past any use).
const MAX_LCD: u64 = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SegmentError(String);

fn err(why: impl Into<String>) -> SegmentError {
    SegmentError(why.into())
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// A non-negative rational number in lowest terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ratio {
    num: u64,
    den: u64,
}

impl Ratio {
    pub const ZERO: Ratio = Ratio { num: 0, den: 1 };
    pub const ONE: Ratio = Ratio { num: 1, den: 1 };

    pub fn new(num: u64, den: u64) -> Ratio {
        assert!(den > 0, "a ratio's denominator is positive");
        let g = gcd(num, den).max(1);
        Ratio {
            num: num / g,
            den: den / g,
        }
    }

    fn from_wide(num: u128, den: u128) -> Result<Ratio, SegmentError> {
        let g = {
            let (mut a, mut b) = (num, den);
            while b != 0 {
                (a, b) = (b, a % b);
            }
            a.max(1)
        };
        let (num, den) = (num / g, den / g);
        match (u64::try_from(num), u64::try_from(den)) {
            (Ok(num), Ok(den)) => Ok(Ratio { num, den }),
            _ => Err(err("the fractions are too fine")),
        }
    }

    pub fn numerator(self) -> u64 {
        self.num
    }

    pub fn denominator(self) -> u64 {
        self.den
    }

    fn sub(self, other: Ratio) -> Result<Ratio, SegmentError> {
        let (a, b) = (
            u128::from(self.num) * u128::from(other.den),
            u128::from(other.num) * u128::from(self.den),
        );
        Ratio::from_wide(a - b, u128::from(self.den) * u128::from(other.den))
    }

    /// `1/3`, `0.25`, `25%` (k6's three forms), or a whole number.
    pub fn parse(text: &str) -> Result<Ratio, SegmentError> {
        let text = text.trim();
        let invalid = || {
            err(format!(
                "{text:?} is not a valid percentage, decimal or fraction"
            ))
        };
        if let Some(percent) = text.strip_suffix('%') {
            let value = Ratio::parse(percent).map_err(|_| invalid())?;
            return Ratio::from_wide(u128::from(value.num), u128::from(value.den) * 100);
        }
        if let Some((num, den)) = text.split_once('/') {
            let parse = |s: &str| -> Result<u64, SegmentError> {
                if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(invalid());
                }
                s.parse().map_err(|_| invalid())
            };
            let (num, den) = (parse(num)?, parse(den)?);
            if den == 0 {
                return Err(err(format!("{text:?} divides by zero")));
            }
            return Ok(Ratio::new(num, den));
        }
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let digits_ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if (whole.is_empty() && fraction.is_empty())
            || !digits_ok(whole)
            || !digits_ok(fraction)
            || fraction.len() > 12
        {
            return Err(invalid());
        }
        let den = 10u64.pow(fraction.len() as u32);
        let whole: u64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| invalid())?
        };
        let fraction: u64 = if fraction.is_empty() {
            0
        } else {
            fraction.parse().map_err(|_| invalid())?
        };
        let num = whole
            .checked_mul(den)
            .and_then(|w| w.checked_add(fraction))
            .ok_or_else(invalid)?;
        Ok(Ratio::new(num, den))
    }
}

impl PartialOrd for Ratio {
    fn partial_cmp(&self, other: &Ratio) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ratio {
    fn cmp(&self, other: &Ratio) -> Ordering {
        (u128::from(self.num) * u128::from(other.den))
            .cmp(&(u128::from(other.num) * u128::from(self.den)))
    }
}

/// k6's `RatString`: `1/3`, `1`, `0`.
impl fmt::Display for Ratio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.den == 1 {
            write!(f, "{}", self.num)
        } else {
            write!(f, "{}/{}", self.num, self.den)
        }
    }
}

/// `(from, to]`: one process's share of the test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub from: Ratio,
    pub to: Ratio,
}

impl Segment {
    pub const FULL: Segment = Segment {
        from: Ratio::ZERO,
        to: Ratio::ONE,
    };

    pub fn new(from: Ratio, to: Ratio) -> Result<Segment, SegmentError> {
        if from >= to {
            return Err(err(format!(
                "segment start {from} should be less than its end {to}"
            )));
        }
        if to > Ratio::ONE {
            return Err(err(format!("segment end {to} is more than 1")));
        }
        Ok(Segment { from, to })
    }

    /// `1/3:2/3`, `0.5:75%`; a single value `x` means `0:x`, as in k6.
    pub fn parse(text: &str) -> Result<Segment, SegmentError> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Segment::FULL);
        }
        match text.split_once(':') {
            Some((from, to)) => Segment::new(Ratio::parse(from)?, Ratio::parse(to)?),
            None => Segment::new(Ratio::ZERO, Ratio::parse(text)?),
        }
    }

    pub fn length(&self) -> Ratio {
        // from < to, so this cannot underflow; both have u64 parts.
        self.to.sub(self.from).expect("a segment's length fits")
    }

    /// The equal segment `index` of `count` (k6's `Split`).
    pub fn nth_of(index: u64, count: u64) -> Result<Segment, SegmentError> {
        if count == 0 {
            return Err(err("the instance count must be at least 1"));
        }
        if index >= count {
            return Err(err(format!(
                "the instance index {index} is not below the instance count {count}"
            )));
        }
        Segment::new(Ratio::new(index, count), Ratio::new(index + 1, count))
    }

    pub fn overlaps(&self, other: &Segment) -> bool {
        self.from < other.to && other.from < self.to
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.from, self.to)
    }
}

/// Contiguous segments: each starts where the previous one ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sequence(Vec<Segment>);

impl Sequence {
    /// `r1,r2,…,rn`: the segments `(r1,r2], (r2,r3], …`.
    pub fn parse(text: &str) -> Result<Sequence, SegmentError> {
        let points = text
            .split(',')
            .map(Ratio::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if points.len() < 2 {
            return Err(err(format!(
                "a sequence needs at least 2 points, {} given",
                points.len()
            )));
        }
        let segments = points
            .windows(2)
            .map(|pair| Segment::new(pair[0], pair[1]))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Sequence(segments))
    }

    /// `count` equal segments covering 0..1.
    pub fn equal(count: u64) -> Result<Sequence, SegmentError> {
        (0..count)
            .map(|i| Segment::nth_of(i, count))
            .collect::<Result<Vec<_>, _>>()
            .map(Sequence)
    }

    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    /// Completed to cover 0..1 (k6's `GetFilledExecutionSegmentSequence`):
    /// with no sequence, the segment and what lies around it.
    fn filled(sequence: Option<&Sequence>, segment: Segment) -> Sequence {
        let mut segments = match sequence {
            Some(seq) => seq.0.clone(),
            None if segment == Segment::FULL => return Sequence(vec![Segment::FULL]),
            None => vec![segment],
        };
        let first = segments[0].from;
        if first != Ratio::ZERO {
            segments.insert(
                0,
                Segment {
                    from: Ratio::ZERO,
                    to: first,
                },
            );
        }
        let last = segments[segments.len() - 1].to;
        if last != Ratio::ONE {
            segments.push(Segment {
                from: last,
                to: Ratio::ONE,
            });
        }
        Sequence(segments)
    }
}

impl fmt::Display for Sequence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut points = vec![self.0[0].from.to_string()];
        points.extend(self.0.iter().map(|s| s.to.to_string()));
        f.write_str(&points.join(","))
    }
}

/// A full sequence with its striping: which integers of each cycle of
/// `lcd` belong to which segment.
#[derive(Debug)]
struct Striping {
    sequence: Sequence,
    lcd: u64,
    /// Per segment, its positions within one cycle, ascending.
    positions: Vec<Vec<u64>>,
}

impl Striping {
    fn new(sequence: Sequence) -> Result<Striping, SegmentError> {
        let mut lcd: u64 = 1;
        for segment in &sequence.0 {
            let den = segment.length().den;
            lcd = (lcd / gcd(lcd, den))
                .checked_mul(den)
                .filter(|l| *l <= MAX_LCD)
                .ok_or_else(|| {
                    err(format!(
                        "sequence {sequence} repeats only every {} or more integers; use coarser fractions",
                        MAX_LCD
                    ))
                })?;
        }
        // Each segment's share of a cycle, biggest first (stable for ties).
        let mut order: Vec<(usize, u64)> = sequence
            .0
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let length = s.length();
                (i, length.num * (lcd / length.den))
            })
            .collect();
        order.sort_by_key(|&(_, share)| std::cmp::Reverse(share));
        let mut taken = vec![0u64; order.len()];
        let mut positions = vec![Vec::new(); order.len()];
        // Element i goes to the first segment (biggest first) that is not
        // ahead of its even spacing: it has taken c elements and
        // i ≥ c · lcd / share.
        for i in 0..lcd {
            for (rank, &(index, share)) in order.iter().enumerate() {
                if u128::from(i) * u128::from(share) >= u128::from(taken[rank]) * u128::from(lcd) {
                    taken[rank] += 1;
                    positions[index].push(i);
                    break;
                }
            }
        }
        Ok(Striping {
            sequence,
            lcd,
            positions,
        })
    }

    fn scale(&self, index: usize, value: u64) -> u64 {
        let positions = &self.positions[index];
        let rest = value % self.lcd;
        (value / self.lcd) * positions.len() as u64
            + positions.iter().take_while(|p| **p < rest).count() as u64
    }
}

/// This process's segment within its sequence (k6's `ExecutionTuple`).
#[derive(Clone, Debug)]
pub struct Tuple {
    striping: Arc<Striping>,
    index: usize,
}

impl PartialEq for Tuple {
    fn eq(&self, other: &Tuple) -> bool {
        self.index == other.index && self.striping.sequence == other.striping.sequence
    }
}

impl Tuple {
    /// The whole test: `0:1` in `0,1`.
    pub fn full() -> Tuple {
        Tuple::new(Segment::FULL, None).expect("the full segment is valid")
    }

    /// `segment` within `sequence` (or within the sequence filled around
    /// it); an error when the sequence does not contain the segment.
    pub fn new(segment: Segment, sequence: Option<&Sequence>) -> Result<Tuple, SegmentError> {
        let filled = Sequence::filled(sequence, segment);
        let index = filled
            .0
            .iter()
            .position(|s| *s == segment)
            .ok_or_else(|| err(format!("segment {segment} is not in the sequence {filled}")))?;
        Ok(Tuple {
            striping: Arc::new(Striping::new(filled)?),
            index,
        })
    }

    /// `--instance-index I --instance-count N`: segment I of N equal ones.
    pub fn instance(index: u64, count: u64) -> Result<Tuple, SegmentError> {
        Tuple::new(
            Segment::nth_of(index, count)?,
            Some(&Sequence::equal(count)?),
        )
    }

    pub fn segment(&self) -> Segment {
        self.striping.sequence.0[self.index]
    }

    /// The full sequence this tuple stripes over.
    pub fn sequence(&self) -> &Sequence {
        &self.striping.sequence
    }

    pub fn is_full(&self) -> bool {
        self.striping.sequence.0.len() == 1
    }

    pub fn lcd(&self) -> u64 {
        self.striping.lcd
    }

    /// This segment's part of `value` (k6's `ScaleInt64`): the parts of
    /// every segment of the sequence add up to `value`.
    pub fn scale(&self, value: u64) -> u64 {
        if self.is_full() {
            return value;
        }
        self.striping.scale(self.index, value)
    }

    /// k6's `GetStripedOffsets`: the first integer this segment holds and
    /// the distances to each next one, repeating every `lcd`.
    pub fn striped_offsets(&self) -> (u64, Vec<u64>, u64) {
        let positions = &self.striping.positions[self.index];
        let lcd = self.striping.lcd;
        let mut offsets: Vec<u64> = positions.windows(2).map(|w| w[1] - w[0]).collect();
        offsets.push(positions[0] + lcd - positions[positions.len() - 1]);
        (positions[0], offsets, lcd)
    }

    /// The integers (0-based) this segment holds, ascending, without end.
    pub fn indices(&self) -> impl Iterator<Item = u64> + '_ {
        let lcd = self.striping.lcd;
        let positions = &self.striping.positions[self.index];
        (0u64..).flat_map(move |cycle| positions.iter().map(move |p| cycle * lcd + p))
    }

    /// k6's `GetNewExecutionTupleFromValue`: the sequence re-cut so that
    /// each segment's length is its scaled part of `value` over `value`
    /// (how shared-iterations and the arrival-rate executors split their
    /// work by VUs). None when this segment gets no part of `value`.
    pub fn resplit(&self, value: u64) -> Option<Tuple> {
        if value == 0 {
            return None;
        }
        if value.is_multiple_of(self.striping.lcd) {
            return Some(self.clone());
        }
        let mut segments = Vec::new();
        let mut index = None;
        let mut prev = 0;
        for i in 0..self.striping.sequence.0.len() {
            let part = self.striping.scale(i, value);
            if part == 0 {
                continue;
            }
            if i == self.index {
                index = Some(segments.len());
            }
            segments.push(Segment {
                from: Ratio::new(prev, value),
                to: Ratio::new(prev + part, value),
            });
            prev += part;
        }
        let striping = Striping::new(Sequence(segments)).ok()?;
        Some(Tuple {
            striping: Arc::new(striping),
            index: index?,
        })
    }

    /// k6's `SegmentedIndex.GoTo(n)`: how many of the global numbers 1..=n
    /// this segment holds, and the biggest of them (0 when none).
    pub fn go_to(&self, n: u64) -> (u64, u64) {
        let scaled = self.scale(n);
        if scaled == 0 {
            return (0, 0);
        }
        (scaled, self.nth_index(scaled - 1) + 1)
    }

    /// The `k`-th (0-based) integer this segment holds.
    pub fn nth_index(&self, k: u64) -> u64 {
        let positions = &self.striping.positions[self.index];
        let per_cycle = positions.len() as u64;
        (k / per_cycle) * self.striping.lcd + positions[(k % per_cycle) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn tuple(seq: &str, seg: &str) -> Tuple {
        let sequence = (!seq.is_empty()).then(|| Sequence::parse(seq).unwrap());
        Tuple::new(Segment::parse(seg).unwrap(), sequence.as_ref()).unwrap()
    }

    #[test]
    fn parses_k6_forms() {
        for (text, from, to) in [
            ("1/2:3/4", (1, 2), (3, 4)),
            ("0.5:0.75", (1, 2), (3, 4)),
            ("50%:75%", (1, 2), (3, 4)),
            ("2/4:75%", (1, 2), (3, 4)),
            ("20%", (0, 1), (1, 5)),
            ("0.2", (0, 1), (1, 5)),
            ("1/5", (0, 1), (1, 5)),
            ("", (0, 1), (1, 1)),
        ] {
            let s = Segment::parse(text).unwrap();
            assert_eq!(s.from, Ratio::new(from.0, from.1), "{text}");
            assert_eq!(s.to, Ratio::new(to.0, to.1), "{text}");
        }
        for bad in [
            "3/4:1/2", "0.5:0.5", "0:1.5", "-1:1", "a", "1/0", "1/3:x", "0:2/3:1",
        ] {
            assert!(Segment::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Segment::parse("1/3:2/3").unwrap().to_string(), "1/3:2/3");
        let seq = Sequence::parse("0,0.3,50%,3/5,1").unwrap();
        assert_eq!(seq.to_string(), "0,3/10,1/2,3/5,1");
        assert!(Sequence::parse("0").is_err());
        assert!(Sequence::parse("0,1/2,1/3,1").is_err());
        assert!(Sequence::parse("0,1/2,1/2,1").is_err());
    }

    /// k6's TestSequenceLCD.
    #[test]
    fn sequence_lcd() {
        for (seq, lcd) in [
            ("0,0.3,0.5,0.6,0.7,0.8,0.9,1", 10),
            ("0,0.1,0.5,0.6,0.7,0.8,0.9,1", 10),
            ("0,0.2,0.5,0.6,0.7,0.8,0.9,1", 10),
            ("0,1/3,5/6", 6),
            ("0,1/3,4/7", 21),
        ] {
            let first = Sequence::parse(seq).unwrap().segments()[0];
            assert_eq!(tuple(seq, &first.to_string()).lcd(), lcd, "{seq}");
        }
    }

    /// k6's TestGetStripedOffsets table.
    #[test]
    fn striped_offsets_as_k6() {
        let cases: &[(&str, &str, u64, &[u64], u64)] = &[
            ("0,0.3,0.5,0.6,0.7,0.8,0.9,1", "0:0.3", 0, &[4, 3, 3], 10),
            ("0,0.3,0.5,0.6,0.7,0.8,0.9,1", "0.3:0.5", 1, &[4, 6], 10),
            ("0,0.3,0.5,0.6,0.7,0.8,0.9,1", "0.5:0.6", 2, &[10], 10),
            ("0,0.3,0.5,0.6,0.7,0.8,0.9,1", "0.6:0.7", 3, &[10], 10),
            ("0,0.3,0.5,0.6,0.7,0.8,0.9,1", "0.8:0.9", 8, &[10], 10),
            ("0,0.3,0.5,0.6,0.7,0.8,0.9,1", "0.9:1", 9, &[10], 10),
            ("0,0.2,0.5,0.6,0.7,0.8,0.9,1", "0.9:1", 9, &[10], 10),
            ("0,0.2,0.5,0.6,0.7,0.8,0.9,1", "0:0.2", 1, &[4, 6], 10),
            ("0,0.2,0.5,0.6,0.7,0.8,0.9,1", "0.6:0.7", 3, &[10], 10),
            ("0,0.2,0.5", "0:0.2", 3, &[6, 4], 10),
            ("0,0.2,0.5", "0.2:0.5", 1, &[4, 2, 4], 10),
            ("0,2/5,4/5", "0:2/5", 0, &[3, 2], 5),
            ("0,2/5,4/5", "2/5:4/5", 1, &[3, 2], 5),
            ("", "0:0.2", 1, &[5], 5),
            ("", "0:1/5", 1, &[5], 5),
            ("", "0:2/10", 1, &[5], 5),
            ("", "0:0.4", 1, &[2, 3], 5),
            ("", "0:2/5", 1, &[2, 3], 5),
            ("", "2/5:4/5", 1, &[3, 2], 5),
            ("", "0:4/10", 1, &[2, 3], 5),
            ("", "1/10:5/10", 1, &[2, 2, 4, 2], 10),
        ];
        for &(seq, seg, start, offsets, lcd) in cases {
            let t = tuple(seq, seg);
            assert_eq!(
                t.striped_offsets(),
                (start, offsets.to_vec(), lcd),
                "{seq} {seg}"
            );
        }
        // A segment missing from its sequence.
        let seq = Sequence::parse("0,0.3,0.5,0.6,0.7,0.8,0.9,1").unwrap();
        assert!(Tuple::new(Segment::parse("0:0.2").unwrap(), Some(&seq)).is_err());
    }

    /// k6's TestNewExecutionTuple and TestGetNewExecutionTupleBesedOnValue.
    #[test]
    fn scale_and_resplit_as_k6() {
        type Resplit<'a> = &'a [(u64, Option<&'a [(u64, u64)]>)];
        type Case<'a> = (&'a str, &'a str, &'a [(u64, u64)], Resplit<'a>);
        let cases: &[Case] = &[
            (
                "",
                "",
                &[(50, 50), (1, 1), (0, 0)],
                &[
                    (50, Some(&[(50, 50), (1, 1), (0, 0)])),
                    (1, Some(&[(50, 50), (1, 1), (0, 0)])),
                    (0, None),
                ],
            ),
            (
                "0,1",
                "0:1",
                &[(50, 50), (1, 1), (0, 0)],
                &[(50, Some(&[(50, 50), (1, 1), (0, 0)])), (0, None)],
            ),
            (
                "0,1/3,2/3,1",
                "0:1/3",
                &[(50, 17), (3, 1), (2, 1), (1, 1), (0, 0)],
                &[
                    (50, Some(&[(50, 17), (1, 1), (0, 0)])),
                    (20, Some(&[(50, 18), (1, 1), (0, 0)])),
                    (3, Some(&[(50, 17), (1, 1), (0, 0)])),
                    (2, Some(&[(50, 25), (1, 1), (0, 0)])),
                    (1, Some(&[(50, 50), (1, 1), (0, 0)])),
                    (0, None),
                ],
            ),
            (
                "0,1/3,2/3,1",
                "1/3:2/3",
                &[(50, 17), (3, 1), (2, 1), (1, 0), (0, 0)],
                &[
                    (50, Some(&[(50, 17), (1, 0), (0, 0)])),
                    (20, Some(&[(50, 17), (1, 0), (0, 0)])),
                    (3, Some(&[(50, 17), (1, 0), (0, 0)])),
                    (2, Some(&[(50, 25), (1, 0), (0, 0)])),
                    (1, None),
                    (0, None),
                ],
            ),
            (
                "0,1/3,2/3,1",
                "2/3:1",
                &[(50, 16), (3, 1), (2, 0), (1, 0), (0, 0)],
                &[
                    (50, Some(&[(50, 16), (1, 0), (0, 0)])),
                    (20, Some(&[(50, 15), (1, 0), (0, 0)])),
                    (3, Some(&[(50, 16), (1, 0), (0, 0)])),
                    (2, None),
                    (1, None),
                    (0, None),
                ],
            ),
        ];
        for &(seq, seg, scales, resplits) in cases {
            let t = tuple(seq, seg);
            for &(value, want) in scales {
                assert_eq!(t.scale(value), want, "{seq} {seg} scale({value})");
            }
            for &(value, want) in resplits {
                let new = t.resplit(value);
                match want {
                    None => assert!(new.is_none(), "{seq} {seg} resplit({value})"),
                    Some(scales) => {
                        let new = new.unwrap();
                        for &(v, w) in scales {
                            assert_eq!(new.scale(v), w, "{seq} {seg} resplit({value}).scale({v})");
                        }
                    }
                }
            }
        }
        let new = tuple("0,1/3,2/3,1", "0:1/3").resplit(20).unwrap();
        assert_eq!(new.sequence().to_string(), "0,7/20,7/10,1");
    }

    /// The table in k6's ExecutionTuple documentation: 50 %, 25 %, 25 %.
    #[test]
    fn iterator_and_scaling_tables_of_k6_docs() {
        let seq = "0,1/2,3/4,1";
        let first: Vec<u64> = tuple(seq, "0:1/2").indices().take(6).collect();
        let second: Vec<u64> = tuple(seq, "1/2:3/4").indices().take(3).collect();
        let third: Vec<u64> = tuple(seq, "3/4:1").indices().take(3).collect();
        assert_eq!(first, [0, 2, 4, 6, 8, 10]);
        assert_eq!(second, [1, 5, 9]);
        assert_eq!(third, [3, 7, 11]);
        let scaled = |seg: &str| {
            (1..=12)
                .map(|v| tuple(seq, seg).scale(v))
                .collect::<Vec<_>>()
        };
        assert_eq!(scaled("0:1/2"), [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]);
        assert_eq!(scaled("1/2:3/4"), [0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3]);
        assert_eq!(scaled("3/4:1"), [0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3]);
    }

    /// k6's SegmentedIndex.GoTo: for 0:2/7 (positions 1 and 4 of every 7),
    /// the count of held numbers in 1..=n and the biggest (1-based).
    #[test]
    fn go_to_as_k6() {
        let t = tuple("", "0:2/7");
        assert_eq!(t.striped_offsets(), (1, vec![3, 4], 7));
        for (n, want) in [
            (1, (0, 0)),
            (2, (1, 2)),
            (4, (1, 2)),
            (5, (2, 5)),
            (6, (2, 5)),
            (9, (3, 9)),
            (12, (4, 12)),
        ] {
            assert_eq!(t.go_to(n), want, "GoTo({n})");
        }
    }

    fn random_sequence(rng: &mut impl Rng) -> Sequence {
        let parts = rng.gen_range(1..=8);
        let den: u64 = rng.gen_range(parts..=60);
        let mut cuts: Vec<u64> = (1..den).collect();
        let mut points = vec![0];
        for _ in 1..parts {
            let i = rng.gen_range(0..cuts.len());
            points.push(cuts.swap_remove(i));
        }
        points.sort_unstable();
        points.push(den);
        Sequence(
            points
                .windows(2)
                .map(|w| Segment::new(Ratio::new(w[0], den), Ratio::new(w[1], den)).unwrap())
                .collect(),
        )
    }

    fn tuples(seq: &Sequence) -> Vec<Tuple> {
        seq.segments()
            .iter()
            .map(|s| Tuple::new(*s, Some(seq)).unwrap())
            .collect()
    }

    #[test]
    fn property_scaled_parts_add_up_and_never_shrink() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        for _ in 0..300 {
            let seq = random_sequence(&mut rng);
            let all = tuples(&seq);
            let mut last = vec![0; all.len()];
            for value in 0..200 {
                let parts: Vec<u64> = all.iter().map(|t| t.scale(value)).collect();
                assert_eq!(parts.iter().sum::<u64>(), value, "{seq} scale({value})");
                assert!(parts.iter().zip(&last).all(|(p, l)| p >= l), "{seq}");
                last = parts;
                // Re-split parts add up too, and keep the same total.
                if value % 13 == 1 {
                    let total: u64 = all
                        .iter()
                        .filter_map(|t| t.resplit(value))
                        .map(|t| t.scale(1000))
                        .sum();
                    assert_eq!(total, 1000, "{seq} resplit({value})");
                }
            }
        }
    }

    #[test]
    fn property_striped_indices_cover_without_overlap_or_gap() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(997);
        for _ in 0..300 {
            let seq = random_sequence(&mut rng);
            let all = tuples(&seq);
            let n = 3 * all[0].lcd() + 5;
            let mut owner = vec![None; n as usize];
            for (i, t) in all.iter().enumerate() {
                for index in t.indices().take_while(|x| *x < n) {
                    assert!(owner[index as usize].is_none(), "{seq}: {index} twice");
                    owner[index as usize] = Some(i);
                }
                // The iterator and scaling agree.
                assert_eq!(
                    t.scale(n),
                    t.indices().take_while(|x| *x < n).count() as u64
                );
            }
            assert!(owner.iter().all(Option::is_some), "{seq}: a gap");
        }
    }
}
