//! Wave plans: which share of the eligible fleet may update, from which offset after the
//! rollout starts. Shares are in basis points (1 % = 100 bp) so plans compare and hash exactly.
//!
//! A plan is valid when it has 1 to 16 waves, shares strictly increase and the last is 100 %,
//! and offsets never decrease. The textual form used by the CLI is
//! `1%@0d,10%@1d,50%@3d,100%@5d` (share `%` `@` offset with units `d`, `h`, `m`, `s`, which may
//! be combined: `1d12h`).

use jiff::SignedDuration;
use serde::{Deserialize, Serialize};

use crate::error::PlanError;

/// 100 % in basis points.
pub const FULL: u32 = 10_000;
/// Most waves in a plan (the wave index is stored in 16 bits; more waves than this make no sense).
pub const MAX_WAVES: usize = 16;

/// One wave: the cumulative share of the eligible fleet that may update once it opens, and the
/// earliest time it may open, as an offset from the rollout's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wave {
    /// Cumulative share in basis points (10000 = 100 %).
    pub share_bp: u32,
    /// Earliest opening, after the rollout's start.
    pub offset: SignedDuration,
}

/// A validated wave plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PlanRepr", into = "PlanRepr")]
pub struct Plan {
    name: String,
    waves: Vec<Wave>,
}

#[derive(Serialize, Deserialize)]
struct PlanRepr {
    name: String,
    waves: Vec<Wave>,
}

impl TryFrom<PlanRepr> for Plan {
    type Error = PlanError;
    fn try_from(r: PlanRepr) -> Result<Plan, PlanError> {
        Plan::custom(r.name, r.waves)
    }
}

impl From<Plan> for PlanRepr {
    fn from(p: Plan) -> PlanRepr {
        PlanRepr {
            name: p.name,
            waves: p.waves,
        }
    }
}

const DAY: i64 = 86_400;

impl Plan {
    /// The weekly plan: 1 % on day 0, 10 % on day 1, 50 % on day 3, 100 % on day 5.
    pub fn weekly() -> Plan {
        Plan::preset(
            "weekly",
            &[(100, 0), (1_000, DAY), (5_000, 3 * DAY), (FULL, 5 * DAY)],
        )
    }

    /// The fast plan for urgent fixes: 10 % at once, 50 % after 2 h, 100 % after 6 h.
    pub fn fast() -> Plan {
        Plan::preset("fast", &[(1_000, 0), (5_000, 2 * 3600), (FULL, 6 * 3600)])
    }

    /// A preset by name (`weekly`, `fast`).
    pub fn named(name: &str) -> Option<Plan> {
        match name {
            "weekly" => Some(Plan::weekly()),
            "fast" => Some(Plan::fast()),
            _ => None,
        }
    }

    fn preset(name: &str, waves: &[(u32, i64)]) -> Plan {
        let waves = waves
            .iter()
            .map(|&(share_bp, secs)| Wave {
                share_bp,
                offset: SignedDuration::from_secs(secs),
            })
            .collect();
        // Invariant: the presets above are valid plans (checked by a unit test).
        Plan::custom(name, waves).expect("preset plans are valid")
    }

    /// A custom plan, validated.
    pub fn custom(name: impl Into<String>, waves: Vec<Wave>) -> Result<Plan, PlanError> {
        if waves.is_empty() {
            return Err(PlanError::NoWaves);
        }
        if waves.len() > MAX_WAVES {
            return Err(PlanError::TooManyWaves { count: waves.len() });
        }
        let mut prev: Option<Wave> = None;
        for (index, w) in waves.iter().enumerate() {
            if w.share_bp == 0 || w.share_bp > FULL {
                return Err(PlanError::ShareOutOfRange {
                    wave: index,
                    share_bp: w.share_bp,
                });
            }
            if w.offset.is_negative() {
                return Err(PlanError::NegativeOffset { wave: index });
            }
            if let Some(p) = prev {
                if w.share_bp <= p.share_bp {
                    return Err(PlanError::SharesNotIncreasing {
                        wave: index,
                        share_bp: w.share_bp,
                        previous_bp: p.share_bp,
                    });
                }
                if w.offset < p.offset {
                    return Err(PlanError::OffsetsDecreasing { wave: index });
                }
            }
            prev = Some(*w);
        }
        let last = waves[waves.len() - 1].share_bp;
        if last != FULL {
            return Err(PlanError::LastWaveNotFull { share_bp: last });
        }
        Ok(Plan {
            name: name.into(),
            waves,
        })
    }

    /// Parses `weekly`, `fast`, or a custom plan like `1%@0d,10%@1d,50%@3d,100%@5d`.
    pub fn parse(text: &str) -> Result<Plan, PlanError> {
        let text = text.trim();
        if let Some(p) = Plan::named(text) {
            return Ok(p);
        }
        let mut waves = Vec::new();
        for part in text.split(',') {
            let part = part.trim();
            let (share, offset) = part.split_once('@').ok_or_else(|| PlanError::Syntax {
                part: part.to_string(),
                why: "expected SHARE%@OFFSET, e.g. 10%@1d",
            })?;
            waves.push(Wave {
                share_bp: parse_share(share).ok_or_else(|| PlanError::Syntax {
                    part: part.to_string(),
                    why: "share must be a percentage with at most two decimals, e.g. 1% or 0.5%",
                })?,
                offset: parse_offset(offset).ok_or_else(|| PlanError::Syntax {
                    part: part.to_string(),
                    why: "offset must be a number with units d/h/m/s, e.g. 0d, 36h, 1d12h",
                })?,
            });
        }
        Plan::custom("custom", waves)
    }

    /// The plan's name (`weekly`, `fast`, `custom` or what the caller chose).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The waves, in order.
    pub fn waves(&self) -> &[Wave] {
        &self.waves
    }
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, w) in self.waves.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(
                f,
                "{}@{}",
                format_share(w.share_bp),
                format_offset(w.offset)
            )?;
        }
        Ok(())
    }
}

/// `1234` bp → `12.34%`, `100` → `1%`.
pub fn format_share(bp: u32) -> String {
    if bp.is_multiple_of(100) {
        format!("{}%", bp / 100)
    } else {
        let s = format!("{}.{:02}", bp / 100, bp % 100);
        format!("{}%", s.trim_end_matches('0'))
    }
}

fn format_offset(d: SignedDuration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0d".into();
    }
    let mut out = String::new();
    for (unit, len) in [("d", DAY), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= len {
            out.push_str(&format!("{}{unit}", secs / len));
            secs %= len;
        }
    }
    out
}

fn parse_share(text: &str) -> Option<u32> {
    let t = text.trim().strip_suffix('%')?.trim();
    let (int, frac) = match t.split_once('.') {
        Some((i, f)) => (i, f),
        None => (t, ""),
    };
    if int.is_empty() || frac.len() > 2 || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let int: u32 = int.parse().ok()?;
    let frac: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<2}").parse().ok()?
    };
    int.checked_mul(100)?.checked_add(frac)
}

fn parse_offset(text: &str) -> Option<SignedDuration> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    let mut total: i64 = 0;
    let mut num = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            'd' => DAY,
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        let n: i64 = num.parse().ok()?;
        num.clear();
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    if !num.is_empty() {
        return None;
    }
    Some(SignedDuration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_match_the_issue() {
        let w = Plan::weekly();
        assert_eq!(w.to_string(), "1%@0d,10%@1d,50%@3d,100%@5d");
        assert_eq!(Plan::fast().to_string(), "10%@0d,50%@2h,100%@6h");
    }

    #[test]
    fn parse_round_trips() {
        for text in ["1%@0d,10%@1d,50%@3d,100%@5d", "0.5%@0d,12.5%@1d12h,100%@2d"] {
            assert_eq!(Plan::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(Plan::parse("weekly").unwrap(), Plan::weekly());
    }

    #[test]
    fn invalid_plans_are_rejected_with_the_reason() {
        assert!(matches!(
            Plan::parse("10%@0d,5%@1d,100%@2d"),
            Err(PlanError::SharesNotIncreasing { wave: 1, .. })
        ));
        assert!(matches!(
            Plan::parse("10%@2d,50%@1d,100%@3d"),
            Err(PlanError::OffsetsDecreasing { wave: 1 })
        ));
        assert!(matches!(
            Plan::parse("10%@0d,50%@1d"),
            Err(PlanError::LastWaveNotFull { share_bp: 5000 })
        ));
        assert!(matches!(
            Plan::parse("0%@0d,100%@1d"),
            Err(PlanError::ShareOutOfRange { wave: 0, .. })
        ));
        assert!(matches!(
            Plan::parse("101%@0d"),
            Err(PlanError::ShareOutOfRange { .. })
        ));
        assert!(matches!(
            Plan::parse("10%0d,100%@1d"),
            Err(PlanError::Syntax { .. })
        ));
        assert!(matches!(
            Plan::parse("10%@1w,100%@2w"),
            Err(PlanError::Syntax { .. })
        ));
        assert!(matches!(Plan::custom("x", vec![]), Err(PlanError::NoWaves)));
        let json = r#"{"name":"x","waves":[{"share_bp":10000,"offset":"PT0S"},{"share_bp":10000,"offset":"PT0S"}]}"#;
        assert!(serde_json::from_str::<Plan>(json).is_err());
    }

    #[test]
    fn equal_offsets_are_allowed() {
        Plan::parse("10%@0d,100%@0d").unwrap();
    }
}
