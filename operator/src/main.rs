//! The `larder-operator` command.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use larder_operator::controller::{self, Context, Options};
use larder_operator::http::{self, Health};
use larder_operator::leader::Elector;
use larder_operator::metrics::Metrics;
use larder_operator::validate::Defaults;

/// Larder operator: reconciles BinaryCache and GCPolicy resources (larder.dev/v1alpha1) into
/// worker Deployments, Services, CronJobs and status.
///
/// Install the CRDs first (`larder-operator crdgen | kubectl apply -f -`, or the Helm chart),
/// then run the operator in the cluster; with no subcommand it runs the controllers.
#[derive(Parser, Debug)]
#[command(
    name = "larder-operator",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controllers (the default): watch caches and GC policies and reconcile them.
    Run(RunArgs),
    /// Print every CRD as YAML on stdout: `larder-operator crdgen > crds/larder.yaml`.
    Crdgen,
}

#[derive(Args, Debug, Clone)]
struct RunArgs {
    /// Watch only this namespace (the operator then needs only a Role there); all namespaces when unset.
    #[arg(long, env = "LARDER_WATCH_NAMESPACE")]
    namespace: Option<String>,

    /// Worker image for caches whose spec names none.
    #[arg(long, env = "LARDER_WORKER_IMAGE", default_value = concat!("larder:", env!("CARGO_PKG_VERSION")))]
    worker_image: String,

    /// Address of /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "LARDER_OPERATOR_HTTP_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    http_addr: SocketAddr,

    /// Elect a leader through a Lease so that only one replica reconciles; turn off only for a
    /// single replica run by hand.
    #[arg(long, env = "LARDER_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,

    /// Namespace of the leader Lease (the operator's own namespace in a cluster).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,

    /// Name of the leader Lease.
    #[arg(long, default_value = "larder-operator")]
    lease_name: String,

    /// This replica's identity in the Lease and in Events; the pod name in a cluster.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,

    /// Log format.
    #[arg(long, env = "LARDER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crdgen) => crdgen(),
        Some(Command::Run(args)) => run(args),
        None => run(cli.run),
    }
}

fn crdgen() -> ExitCode {
    match larder_operator::crd::to_yaml() {
        Ok(yaml) => match std::io::stdout().write_all(yaml.as_bytes()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("crdgen: writing stdout: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("crdgen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs) -> ExitCode {
    init_tracing(args.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("larder-operator: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: RunArgs) -> Result<(), String> {
    // Built together with the worker, rustls has two crypto backends and cannot pick one
    // itself; the kube client's TLS then fails. Ring is the one kube is built with.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("connecting to the API server: {e}"))?;
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let health = Health {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .map_err(|e| format!("listening on {}: {e}", args.http_addr))?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, http::router(health)).await {
            tracing::error!(error = %e, "health and metrics server stopped");
        }
    });

    let defaults = Defaults {
        worker_image: args.worker_image.clone(),
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        defaults,
        metrics,
        Some(identity.clone()),
    ));
    let options = Options {
        namespace: args.namespace.clone(),
    };
    // A standby replica is healthy and ready: it takes over when the leader goes.
    ready.store(true, Ordering::Relaxed);

    if !args.leader_election {
        tracing::info!(namespace = ?options.namespace, "running controllers without leader election");
        controller::run(ctx, options).await;
        return Ok(());
    }
    let elector = Elector::new(
        client,
        &args.lease_namespace,
        &args.lease_name,
        &identity,
        Duration::from_secs(15),
    );
    tracing::info!(%identity, lease = %args.lease_name, "waiting for leadership");
    // Losing the Lease ends the process, so that a restarted replica queues up again.
    elector
        .lead(controller::run(ctx, options))
        .await
        .map_err(|e| e.to_string())
}

fn default_identity() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "larder-operator".into());
    let mut suffix = [0u8; 4];
    // Without randomness the host name alone still identifies a replica in most setups.
    let _ = getrandom::fill(&mut suffix);
    let hex: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    format!("{host}-{hex}")
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
