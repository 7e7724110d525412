//! Where the service's `tracing` data goes: log lines on stderr always, and, with the `otlp`
//! feature and `--otlp-endpoint`, the spans to an OpenTelemetry collector over OTLP/HTTP
//! (protobuf).
//!
//! The endpoint settings are parsed in every build, so a binary built without the feature can
//! refuse them by name instead of ignoring them.

use std::fmt;
use std::io::IsTerminal as _;

use axum::http::Uri;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _, Registry};

/// Service name reported in the exported spans' resource when none is configured.
pub const DEFAULT_OTLP_SERVICE_NAME: &str = "stockguard";
/// The OTLP/HTTP path for spans, appended to the configured base endpoint.
pub const OTLP_TRACES_PATH: &str = "/v1/traces";

/// Why the telemetry settings or set-up were refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// An OTLP setting was given to a binary compiled without the `otlp` feature, which
    /// cannot export; ignoring the setting would leave the operator waiting for spans that
    /// never come.
    #[error(
        "{setting} is set, but this stockguard was built without the `otlp` feature and cannot \
         export spans: rebuild with `cargo install --path crates/api --features otlp`, or unset it"
    )]
    OtlpNotBuilt {
        /// The setting, named as flag and variable.
        setting: &'static str,
    },
    /// The endpoint is not a plain `http://host:port[/path]` URL.
    #[error("invalid OTLP endpoint {shown}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given, or a placeholder when it may hold credentials.
        shown: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A service name was given without an endpoint: nothing would be exported under it.
    #[error(
        "--otlp-service-name (STOCKGUARD_OTLP_SERVICE_NAME) is set but --otlp-endpoint \
         (STOCKGUARD_OTLP_ENDPOINT) is not, so no span would carry it"
    )]
    ServiceNameWithoutEndpoint,
    /// The OTLP span exporter could not be built.
    #[cfg(feature = "otlp")]
    #[error("starting the OTLP span exporter")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
    /// A global `tracing` subscriber was installed already.
    #[error("installing the log subscriber")]
    Subscriber(#[source] tracing_subscriber::util::TryInitError),
}

/// The URL spans are POSTed to: `http://host:port/…/v1/traces`.
#[derive(Clone, PartialEq, Eq)]
pub struct OtlpEndpoint(Uri);

impl OtlpEndpoint {
    /// Parses a base endpoint such as `http://127.0.0.1:4318` (the OTLP/HTTP port; the
    /// traces path is appended, as for `OTEL_EXPORTER_OTLP_ENDPOINT`), or a full traces URL
    /// ending in `/v1/traces`, taken as it is.
    pub fn parse(text: &str) -> Result<Self, TelemetryError> {
        let invalid = |reason| TelemetryError::InvalidEndpoint {
            // Userinfo would be a password in a log line; nothing else in it is secret.
            shown: if text.contains('@') {
                "(not shown: it contains '@')".to_owned()
            } else {
                format!("{text:?}")
            },
            reason,
        };
        let uri: Uri = text
            .trim()
            .parse()
            .map_err(|_| invalid("not a URL (expected e.g. http://127.0.0.1:4318)"))?;
        match uri.scheme_str() {
            Some("http") => {}
            // The exporter's client has no TLS stack compiled in; a collector or agent on
            // loopback (or a sidecar) is the usual way to reach a TLS endpoint.
            Some("https") => {
                return Err(invalid(
                    "https is not supported (no TLS in this build): send to a collector on \
                     http://, e.g. one on loopback that forwards over TLS",
                ));
            }
            _ => return Err(invalid("the scheme must be http://")),
        }
        let authority = uri.authority().ok_or_else(|| invalid("it names no host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid(
                "credentials in the URL are not supported (they would reach logs)",
            ));
        }
        if authority.host().is_empty() {
            return Err(invalid("it names no host"));
        }
        if uri.query().is_some() {
            return Err(invalid("a query string is not supported"));
        }
        let base = uri.path().trim_end_matches('/');
        let path = if base.ends_with(OTLP_TRACES_PATH) {
            base.to_owned()
        } else {
            format!("{base}{OTLP_TRACES_PATH}")
        };
        let full = format!("http://{authority}{path}")
            .parse()
            .map_err(|_| invalid("not a URL once the traces path is appended"))?;
        Ok(Self(full))
    }

    /// The full traces URL.
    pub fn traces_url(&self) -> String {
        self.0.to_string()
    }
}

impl fmt::Debug for OtlpEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for OtlpEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where and as what the spans are exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpSettings {
    /// Where the spans are POSTed.
    pub endpoint: OtlpEndpoint,
    /// `service.name` of the exported resource.
    pub service_name: String,
}

impl OtlpSettings {
    /// The settings from the resolved endpoint and service name (flag, variable or config
    /// file; an empty value counts as unset). `None` when no endpoint is configured; an
    /// error when the binary cannot export or a value is unusable.
    pub fn resolve(
        endpoint: Option<String>,
        service_name: Option<String>,
    ) -> Result<Option<Self>, TelemetryError> {
        let endpoint = endpoint.filter(|e| !e.trim().is_empty());
        let service_name = service_name.filter(|name| !name.trim().is_empty());
        if !cfg!(feature = "otlp") {
            if endpoint.is_some() {
                return Err(TelemetryError::OtlpNotBuilt {
                    setting: "--otlp-endpoint (STOCKGUARD_OTLP_ENDPOINT, otlp_endpoint)",
                });
            }
            if service_name.is_some() {
                return Err(TelemetryError::OtlpNotBuilt {
                    setting: "--otlp-service-name (STOCKGUARD_OTLP_SERVICE_NAME, otlp_service_name)",
                });
            }
            return Ok(None);
        }
        let Some(endpoint) = endpoint else {
            return match service_name {
                Some(_) => Err(TelemetryError::ServiceNameWithoutEndpoint),
                None => Ok(None),
            };
        };
        Ok(Some(Self {
            endpoint: OtlpEndpoint::parse(&endpoint)?,
            service_name: service_name.unwrap_or_else(|| DEFAULT_OTLP_SERVICE_NAME.to_owned()),
        }))
    }
}

/// The installed telemetry. [`Telemetry::shutdown`] must run once the server has stopped:
/// spans wait in a batch, and a process that exits without flushing it loses its last ones.
#[derive(Debug)]
#[must_use = "call shutdown() after serving, or the last spans are lost"]
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still batched and stops the exporter. Blocks until the export is
    /// answered or times out, so it must not run on a runtime worker thread; the runtime must
    /// still be running, since the batch task lives on it.
    pub fn shutdown(self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider {
            match provider.shutdown() {
                Ok(()) => tracing::info!("OTLP: the last spans are exported"),
                Err(error) => tracing::warn!(%error, "OTLP: exporting the last spans failed"),
            }
        }
    }
}

/// The stderr log layer, boxed because its type differs between text and JSON.
type LogLayer = Box<dyn tracing_subscriber::Layer<Registry> + Send + Sync>;
/// The subscriber the span export layer sits on.
#[cfg(feature = "otlp")]
type LogSubscriber = tracing_subscriber::layer::Layered<LogLayer, Registry>;

/// Installs the global subscriber: log lines on stderr (text, or JSON with `json_logs`,
/// filtered by `RUST_LOG`, default `info`) and, when `otlp` is given, span export. With
/// `otlp`, call it inside a tokio runtime: the batch exporter runs as a task on it.
pub fn init(json_logs: bool, otlp: Option<&OtlpSettings>) -> Result<Telemetry, TelemetryError> {
    let registry = tracing_subscriber::registry().with(log_layer(json_logs));
    #[cfg(feature = "otlp")]
    {
        let (provider, span_layer) = match otlp {
            Some(settings) => {
                let (provider, layer) = export::span_layer(settings)?;
                (Some(provider), Some(layer))
            }
            None => (None, None),
        };
        registry
            .with(span_layer)
            .try_init()
            .map_err(TelemetryError::Subscriber)?;
        if let Some(settings) = otlp {
            tracing::info!(
                endpoint = %settings.endpoint,
                service_name = %settings.service_name,
                "OTLP: exporting spans"
            );
        }
        Ok(Telemetry { provider })
    }
    #[cfg(not(feature = "otlp"))]
    {
        // Settings refuse an endpoint in this build (`OtlpSettings::resolve`).
        debug_assert!(otlp.is_none(), "OTLP settings resolved without the feature");
        registry.try_init().map_err(TelemetryError::Subscriber)?;
        Ok(Telemetry {})
    }
}

/// The stderr log layer with its own `RUST_LOG` filter, so the filter decides what is logged
/// without deciding what is exported.
fn log_layer(json: bool) -> LogLayer {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Escape codes belong on a terminal only; in a file or a log collector they are noise.
    // NO_COLOR (no-color.org) turns them off on a terminal too.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if json {
        // Event fields at the top level, the request span (request id, sku, strategy) beside them.
        layer
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(filter)
            .boxed()
    } else {
        layer.with_filter(filter).boxed()
    }
}

#[cfg(feature = "otlp")]
mod export {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{Protocol, WithExportConfig as _};
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::runtime::Tokio;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
    use tracing::Level;
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::{LevelFilter, Targets};

    use super::{LogSubscriber, OtlpSettings, TelemetryError};

    /// The provider (kept to flush it at shutdown) and the layer that feeds it.
    pub(super) fn span_layer(
        settings: &OtlpSettings,
    ) -> Result<(SdkTracerProvider, impl Layer<LogSubscriber> + Send + Sync), TelemetryError> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(settings.endpoint.traces_url())
            .build()
            .map_err(TelemetryError::Exporter)?;
        // The SDK's default batch processor exports from a thread of its own, where the hyper
        // client (which needs a tokio reactor) cannot run; this one is a task on our runtime.
        // Batch size and delay follow the OTEL_BSP_* variables.
        let processor = BatchSpanProcessor::builder(exporter, Tokio).build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(
                Resource::builder()
                    .with_service_name(settings.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer(env!("CARGO_PKG_NAME"));
        // Independent of RUST_LOG: quieting the log must not thin out the traces. The engine's
        // `deduct` span is DEBUG so that it stays out of every log line's span context, but
        // in a trace it is the request's child that shows the database work.
        // The exporter's own events (a failed export) go to the log only: exported, they could
        // feed the exporter its own failures. The prefix covers every opentelemetry* crate.
        let filter = Targets::new()
            .with_default(Level::INFO)
            .with_target("stockguard_core::engine", Level::DEBUG)
            .with_target("opentelemetry", LevelFilter::OFF);
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(filter);
        Ok((provider, layer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_the_traces_path_once() {
        for (given, traces) in [
            ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
            ("http://127.0.0.1:4318/", "http://127.0.0.1:4318/v1/traces"),
            (
                "http://collector:4318/otlp",
                "http://collector:4318/otlp/v1/traces",
            ),
            ("http://[::1]:4318/v1/traces", "http://[::1]:4318/v1/traces"),
        ] {
            assert_eq!(OtlpEndpoint::parse(given).unwrap().traces_url(), traces);
        }
    }

    #[test]
    fn unusable_endpoints_are_refused_with_the_reason() {
        for (given, reason) in [
            ("127.0.0.1:4318", "scheme"),
            ("ftp://127.0.0.1:4318", "scheme"),
            ("https://collector:4318", "https"),
            ("http://user:secret@collector:4318", "credentials"),
            ("http://collector:4318/?x=1", "query"),
            ("not a url", "not a URL"),
        ] {
            let error = OtlpEndpoint::parse(given).unwrap_err();
            let message = error.to_string();
            assert!(
                matches!(error, TelemetryError::InvalidEndpoint { .. }) && message.contains(reason),
                "{given}: {message}"
            );
            assert!(!message.contains("secret"), "{message}");
        }
    }

    #[test]
    fn nothing_set_is_no_export() {
        assert_eq!(OtlpSettings::resolve(None, None).unwrap(), None);
        // An empty variable (`STOCKGUARD_OTLP_ENDPOINT=`) is unset, as for the tokens.
        assert_eq!(
            OtlpSettings::resolve(Some(" ".into()), Some(String::new())).unwrap(),
            None
        );
    }

    #[cfg(not(feature = "otlp"))]
    #[test]
    fn without_the_feature_any_otlp_setting_is_refused() {
        for (endpoint, service) in [
            (Some("http://127.0.0.1:4318".to_owned()), None),
            (None, Some("shop".to_owned())),
        ] {
            let error = OtlpSettings::resolve(endpoint, service).unwrap_err();
            assert!(matches!(error, TelemetryError::OtlpNotBuilt { .. }), "{error}");
            assert!(error.to_string().contains("`otlp` feature"), "{error}");
        }
    }

    #[cfg(feature = "otlp")]
    #[test]
    fn with_the_feature_the_service_name_defaults_and_needs_an_endpoint() {
        let settings = OtlpSettings::resolve(Some("http://127.0.0.1:4318".into()), None)
            .unwrap()
            .unwrap();
        assert_eq!(settings.service_name, DEFAULT_OTLP_SERVICE_NAME);
        assert!(matches!(
            OtlpSettings::resolve(None, Some("shop".into())),
            Err(TelemetryError::ServiceNameWithoutEndpoint)
        ));
        let unnamed = OtlpSettings::resolve(Some("http://127.0.0.1:4318".into()), Some(" ".into()));
        assert_eq!(unnamed.unwrap().unwrap().service_name, DEFAULT_OTLP_SERVICE_NAME);
    }
}
