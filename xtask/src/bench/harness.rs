//! Measuring: interleaved rounds of several variants, and ratios against a baseline.
//!
//! These machines are shared and noisy, so absolute figures are printed but never judged. What a
//! benchmark reports is the ratio of each variant to its baseline, computed round by round from
//! runs made back to back (A B C A B C …), so a slow minute slows every variant alike.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// How many measured rounds, after how many discarded warm-up rounds.
#[derive(Clone, Copy, Debug)]
pub struct Rounds {
    pub warmup: usize,
    pub measured: usize,
}

/// A variant: its label and a function that runs it once and returns its figure.
pub struct Variant<'a> {
    pub label: String,
    pub run: Box<dyn FnMut() -> Result<f64> + 'a>,
}

impl<'a> Variant<'a> {
    pub fn new(label: impl Into<String>, run: impl FnMut() -> Result<f64> + 'a) -> Variant<'a> {
        Variant { label: label.into(), run: Box::new(run) }
    }
}

/// The figures of every variant, one per measured round.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Samples {
    /// What the figures are, e.g. "requests/s" or "seconds".
    pub metric: String,
    pub higher_is_better: bool,
    pub variants: Vec<VariantSamples>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VariantSamples {
    pub label: String,
    pub values: Vec<f64>,
}

/// Runs every variant once per round, in order, `warmup + measured` times.
pub fn interleave(
    metric: &str,
    higher_is_better: bool,
    rounds: Rounds,
    variants: &mut [Variant<'_>],
) -> Result<Samples> {
    let mut values = vec![Vec::with_capacity(rounds.measured); variants.len()];
    for round in 0..rounds.warmup + rounds.measured {
        for (variant, values) in variants.iter_mut().zip(&mut values) {
            let value = (variant.run)().with_context(|| format!("{} (round {})", variant.label, round + 1))?;
            if round >= rounds.warmup {
                values.push(value);
            }
            println!("  round {:>2} {:<28} {value:>14.3} {metric}", round + 1, variant.label);
        }
    }
    let variants = variants
        .iter()
        .zip(values)
        .map(|(variant, values)| VariantSamples { label: variant.label.clone(), values })
        .collect();
    Ok(Samples { metric: metric.to_owned(), higher_is_better, variants })
}

/// Median and spread of one variant's figure relative to the baseline's, over the rounds.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Ratio {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Samples {
    pub fn values(&self, label: &str) -> &[f64] {
        &self
            .variants
            .iter()
            .find(|variant| variant.label == label)
            .expect("a variant measured by this benchmark")
            .values
    }

    /// `label`'s figure divided by `baseline`'s, round by round.
    pub fn ratio(&self, label: &str, baseline: &str) -> Ratio {
        let ratios: Vec<f64> =
            self.values(label).iter().zip(self.values(baseline)).map(|(value, base)| value / base).collect();
        Ratio::of(&ratios)
    }

    pub fn median(&self, label: &str) -> f64 {
        median(self.values(label))
    }
}

pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The smallest and the largest of `values` (NaN for none).
pub fn range(values: &[f64]) -> (f64, f64) {
    let fold = |pick: fn(f64, f64) -> f64| values.iter().copied().reduce(pick).unwrap_or(f64::NAN);
    (fold(f64::min), fold(f64::max))
}

impl Ratio {
    /// The median and range of ratios taken round by round.
    pub fn of(ratios: &[f64]) -> Ratio {
        let (min, max) = range(ratios);
        Ratio { median: median(ratios), min, max }
    }
}

/// The verdict on a goal of keeping at least `goal` of a baseline's figure: when it is missed,
/// by how much, and whether `noise` (the same thing measured against itself, described by
/// `noise_of`) differs from itself by as much as the ratio differs from parity.
pub fn at_least(goal: f64, ratio: Ratio, noise: Ratio, noise_of: &str) -> String {
    if ratio.median >= goal {
        return format!("≥ {goal} (met)");
    }
    let noise_width = (1.0 - noise.min).max(noise.max - 1.0);
    let side = if 1.0 - ratio.median <= noise_width { "within" } else { "beyond" };
    format!(
        "≥ {goal} (not met, by {:.3}; {side} the noise: {noise_of} differs from itself by up to {noise_width:.3})",
        goal - ratio.median
    )
}

impl std::fmt::Display for Ratio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.3} ({:.3}–{:.3})", self.median, self.min, self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_interleave_and_ratios_pair_by_round() {
        let order = std::cell::RefCell::new(Vec::new());
        let mut a = 0.0;
        let mut b = 0.0;
        let mut variants = [
            Variant::new("a", || {
                order.borrow_mut().push('a');
                a += 2.0;
                Ok(a)
            }),
            Variant::new("b", || {
                order.borrow_mut().push('b');
                b += 1.0;
                Ok(b)
            }),
        ];
        let samples = interleave("units", true, Rounds { warmup: 1, measured: 3 }, &mut variants).unwrap();
        drop(variants);
        assert_eq!(order.into_inner().iter().collect::<String>(), "abababab");
        assert_eq!(samples.values("a"), [4.0, 6.0, 8.0]);
        let ratio = samples.ratio("a", "b");
        assert_eq!((ratio.min, ratio.median, ratio.max), (2.0, 2.0, 2.0));
        assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), 2.5);
    }

    #[test]
    fn a_missed_goal_says_whether_the_noise_is_as_large() {
        let ratio = |median, min, max| Ratio { median, min, max };
        assert_eq!(at_least(0.98, ratio(0.99, 0.9, 1.1), ratio(1.0, 1.0, 1.0), "x"), "≥ 0.98 (met)");
        let missed = at_least(0.98, ratio(0.976, 0.95, 1.07), ratio(1.01, 0.96, 1.04), "the floor");
        assert_eq!(
            missed,
            "≥ 0.98 (not met, by 0.004; within the noise: the floor differs from itself by up to 0.040)"
        );
        assert!(at_least(0.98, ratio(0.9, 0.88, 0.92), ratio(1.0, 0.99, 1.02), "x").contains("beyond the noise"));
    }
}
