//! `amble privacy …`: the accountant — ε for a training plan, or σ for a target ε.

use crate::output::Output;
use amble_learn::privacy::{
    Conversion, Delta, Epsilon, SampledGaussian, epsilon_for, noise_multiplier_for, orders_abadi,
    orders_dp_accounting, orders_opacus,
};
use anyhow::Result;
use clap::{Subcommand, ValueEnum};
use std::process::ExitCode;

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum AccountantKind {
    /// Rényi DP of the Poisson-subsampled Gaussian (Mironov et al. 2019).
    Rdp,
    /// Privacy loss distribution (tighter).
    Pld,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Orders {
    /// dp_accounting's fine grid (the default).
    DpAccounting,
    /// The moments accountant's grid (Abadi et al. 2016).
    Abadi,
    /// Opacus' default orders.
    Opacus,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum ConversionKind {
    /// ε = rdp + log(1/δ)/(α−1).
    Classic,
    /// The tighter conversion used by dp_accounting and Opacus (Balle et al. 2020).
    Improved,
}

#[derive(Subcommand)]
pub(crate) enum PrivacyCommand {
    /// ε spent by T steps of the Poisson-subsampled Gaussian mechanism (rate q, noise σ) at δ.
    Epsilon {
        /// Sampling rate q in (0, 1].
        #[arg(long)]
        q: f64,
        /// Noise multiplier σ (noise std / clip bound).
        #[arg(long)]
        sigma: f64,
        #[arg(long)]
        steps: u64,
        #[arg(long, default_value_t = 1e-5)]
        delta: f64,
        #[arg(long, value_enum, default_value = "rdp")]
        accountant: AccountantKind,
        #[arg(long, value_enum, default_value = "dp-accounting")]
        orders: Orders,
        #[arg(long, value_enum, default_value = "improved")]
        conversion: ConversionKind,
    },
    /// The smallest noise multiplier σ such that T steps at rate q cost at most ε at δ (RDP).
    Sigma {
        #[arg(long)]
        q: f64,
        #[arg(long)]
        steps: u64,
        #[arg(long)]
        epsilon: f64,
        #[arg(long, default_value_t = 1e-5)]
        delta: f64,
    },
}

pub(crate) fn run(cmd: PrivacyCommand, out: &Output) -> Result<ExitCode> {
    match cmd {
        PrivacyCommand::Epsilon {
            q,
            sigma,
            steps,
            delta,
            accountant,
            orders,
            conversion,
        } => {
            let mech = SampledGaussian::new(q, sigma)?;
            let d = Delta::new(delta)?;
            let eps = match accountant {
                AccountantKind::Pld => {
                    amble_learn::privacy::pld_epsilon(&mech, steps, d, 1e-4)?.value()
                }
                AccountantKind::Rdp => {
                    let orders = match orders {
                        Orders::DpAccounting => orders_dp_accounting(),
                        Orders::Abadi => orders_abadi(),
                        Orders::Opacus => orders_opacus(),
                    };
                    let conv = match conversion {
                        ConversionKind::Classic => Conversion::Classic,
                        ConversionKind::Improved => Conversion::Improved,
                    };
                    epsilon_for(&mech, steps, &orders, d, conv)?.epsilon.value()
                }
            };
            out.report(&serde_json::json!({"epsilon": eps, "delta": delta}), || {
                format!("{eps:.4}")
            });
        }
        PrivacyCommand::Sigma {
            q,
            steps,
            epsilon,
            delta,
        } => {
            let sigma = noise_multiplier_for(
                Epsilon::new(epsilon)?,
                Delta::new(delta)?,
                q,
                steps,
                &orders_dp_accounting(),
                Conversion::Improved,
            )?;
            out.report(&serde_json::json!({"sigma": sigma}), || {
                format!("{sigma:.4}")
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}
