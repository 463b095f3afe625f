//! Domain floors and caps: the host's guarantee, whatever the guests say of themselves.
//!
//! Everything a policy ranks by (comm, uid, cgroup, how many tasks are runnable) is written by
//! the guests; a guest's owner can rename a batch job after the top class or fork runnable tasks.
//! A domain's [`Share`] is set by the host (`--domain …,floor=25%,cap=75%`) and applied by
//! admission after the policy's ranking (Monarch's hybrid scheduling: process priorities inside
//! per-VM guarantees):
//! - **floor**: while the domain has tasks that want a CPU, it gets at least this share of the
//!   host CPU budget over time. Each period it is owed `floor × budget` CPU-periods more (at
//!   most one period's worth beyond that: no burst after a long wait), and each of its tasks
//!   admitted pays one back. A domain owed a whole CPU takes a slot the ranking did not give
//!   it, from the lowest-ranked admitted task of a domain that is owed nothing.
//! - **cap**: it never gets more than this share over time: each period adds `cap × budget` to
//!   its allowance (which holds at most one CPU-period beyond that), and each task admitted
//!   spends one.
//!
//! A domain without a share has floor 0 and cap 100 %: only the ranking decides for it.

use std::collections::HashMap;

use crate::domain::{DomainId, Share};

/// Rounding room for the CPU-period sums.
const EPSILON: f64 = 1e-9;

/// What one domain is owed and may still take.
#[derive(Clone, Copy, Debug)]
struct Account {
    share: Share,
    /// CPU-periods of its floor not yet given.
    owed: f64,
    /// CPU-periods its cap still allows.
    allowance: f64,
}

/// The shares of the domains that have one, and their accounts.
#[derive(Clone, Debug, Default)]
pub struct Shares {
    accounts: HashMap<DomainId, Account>,
}

impl Shares {
    /// The accounts of `domains`; those with the default share need none.
    pub fn of(domains: impl IntoIterator<Item = (DomainId, Share)>) -> Self {
        let accounts = domains
            .into_iter()
            .filter(|(_, share)| *share != Share::default())
            .map(|(id, share)| (id, Account { share, owed: 0.0, allowance: 0.0 }))
            .collect();
        Self { accounts }
    }

    /// Starts a period with `budget` host CPUs: `wants` says which domains have tasks that want
    /// a CPU.
    pub fn accrue(&mut self, wants: impl Fn(DomainId) -> bool, budget: u32) {
        let budget = f64::from(budget);
        for (id, account) in &mut self.accounts {
            let floor = f64::from(account.share.floor_percent) / 100.0 * budget;
            let cap = f64::from(account.share.cap_percent) / 100.0 * budget;
            account.owed = if wants(*id) { (account.owed + floor).min(floor + 1.0) } else { 0.0 };
            account.allowance = (account.allowance + cap).min(cap + 1.0);
        }
    }

    /// Whether the domain's cap lets it take one more CPU this period.
    pub fn may_take(&self, domain: DomainId) -> bool {
        self.accounts.get(&domain).is_none_or(|a| a.share.cap_percent == 100 || a.allowance >= 1.0 - EPSILON)
    }

    /// The domain takes one CPU this period.
    pub fn take(&mut self, domain: DomainId) {
        if let Some(a) = self.accounts.get_mut(&domain) {
            a.owed -= 1.0;
            a.allowance -= 1.0;
        }
    }

    /// The domain gives back a CPU it took this period.
    pub fn give_back(&mut self, domain: DomainId) {
        if let Some(a) = self.accounts.get_mut(&domain) {
            a.owed += 1.0;
            a.allowance += 1.0;
        }
    }

    /// Whether the domain is owed a whole CPU of its floor.
    pub fn is_owed(&self, domain: DomainId) -> bool {
        self.accounts.get(&domain).is_some_and(|a| a.owed >= 1.0 - EPSILON)
    }

    /// The domains owed a whole CPU of their floor, the most owed first (ties by id).
    pub fn owed_domains(&self) -> Vec<DomainId> {
        let mut owed: Vec<(DomainId, f64)> = self.accounts.iter().filter(|(id, _)| self.is_owed(**id)).map(|(id, a)| (*id, a.owed)).collect();
        owed.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        owed.into_iter().map(|(id, _)| id).collect()
    }

    /// Ends the period: a domain that got more than its floor is owed nothing (not less).
    pub fn settle(&mut self) {
        for account in self.accounts.values_mut() {
            account.owed = account.owed.max(0.0);
        }
    }
}

/// Refuses floors that add up to more than the whole budget: they could not all be kept.
pub fn check_floors<'a>(shares: impl IntoIterator<Item = (&'a str, Share)>) -> Result<(), String> {
    let shares: Vec<(&str, Share)> = shares.into_iter().collect();
    let total: u32 = shares.iter().map(|(_, s)| u32::from(s.floor_percent)).sum();
    if total > 100 {
        let each: Vec<String> = shares.iter().filter(|(_, s)| s.floor_percent > 0).map(|(name, s)| format!("{name} {}%", s.floor_percent)).collect();
        return Err(format!("--domain: the floors add up to {total}% of the host CPU budget ({}): at most 100%", each.join(", ")));
    }
    Ok(())
}
