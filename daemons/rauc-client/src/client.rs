//! [`RaucClient`]: RAUC's installer as typed async calls, and [`Installation`]: one install
//! followed from `InstallBundle` to `Completed`.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::{BoxStream, Stream, StreamExt};
use tokio::time::Instant;
use zbus::message::{Sequence, Type as MessageType};
use zbus::names::BusName;
use zbus::proxy::CacheProperties;
use zbus::zvariant::OwnedValue;
use zbus::{Connection, MatchRule, Message, MessageStream};

use crate::error::RaucError;
use crate::proxy::{INTERFACE, InstallerProxy, PATH, SERVICE};
use crate::types::{BundleInfo, InstallArgs, MarkState, Marked, Operation, Progress, SlotStatus};

/// Signals queued per install before the oldest are dropped. rauc 1.8 sends about 20 property
/// changes per install, so only a consumer stalled for a whole install could lose any.
const SIGNAL_QUEUE: usize = 1024;

const PROPERTIES_INTERFACE: &str = "org.freedesktop.DBus.Properties";

/// A connection to RAUC's installer. Cheap to clone; clones share the connection.
#[derive(Debug, Clone)]
pub struct RaucClient {
    conn: Connection,
    proxy: InstallerProxy<'static>,
}

impl RaucClient {
    /// Connects to the system bus (or to `DBUS_SYSTEM_BUS_ADDRESS` when set, which is how tests
    /// and containers point a client at another bus).
    pub async fn connect_system() -> Result<Self, RaucError> {
        let conn = Connection::system()
            .await
            .map_err(|source| RaucError::Connect {
                source: Box::new(source),
            })?;
        Self::from_connection(conn).await
    }

    /// Uses an existing connection, e.g. one built with `zbus::connection::Builder::address`.
    pub async fn from_connection(conn: Connection) -> Result<Self, RaucError> {
        // No property cache: a cached value is only as fresh as the last PropertiesChanged
        // signal, and right after connecting it may not have arrived yet. Every getter asks RAUC.
        let proxy = InstallerProxy::builder(&conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(|source| RaucError::DBus {
                method: "(create proxy)",
                source: Box::new(source),
            })?;
        Ok(Self { conn, proxy })
    }

    /// The underlying connection.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The raw proxy, for anything this type does not wrap.
    pub fn proxy(&self) -> &InstallerProxy<'static> {
        &self.proxy
    }

    /// Installs `bundle` and waits for the outcome: `Ok` once RAUC sends `Completed(0)`,
    /// [`RaucError::InstallFailed`] with RAUC's `LastError` on any other result,
    /// [`RaucError::Timeout`] if nothing finished within `timeout` (RAUC then goes on
    /// installing). `on_progress` sees every `Progress` change in order.
    ///
    /// RAUC opens the bundle itself and needs it to itself: close every handle to the file
    /// (including the one you downloaded it with) before calling this.
    pub async fn install(
        &self,
        bundle: impl AsRef<Path>,
        args: &InstallArgs,
        timeout: Duration,
        on_progress: impl FnMut(&Progress),
    ) -> Result<(), RaucError> {
        let deadline = Instant::now() + timeout;
        let timed_out = || RaucError::Timeout {
            operation: "install",
            timeout,
        };
        let installation = tokio::time::timeout_at(deadline, self.start_install(bundle, args))
            .await
            .map_err(|_| timed_out())??;
        installation
            .wait_until(deadline, timeout, on_progress)
            .await
    }

    /// Starts installing `bundle` and returns the install as a stream of progress updates.
    ///
    /// The subscription to RAUC's signals is made *before* `InstallBundle` is called, so no
    /// update and no `Completed` can slip past; a `Completed` that arrives before RAUC accepted
    /// the call belongs to an earlier install and is skipped. See [`Installation`].
    pub async fn start_install(
        &self,
        bundle: impl AsRef<Path>,
        args: &InstallArgs,
    ) -> Result<Installation, RaucError> {
        let (bundle, source) = bundle_source(bundle.as_ref())?;
        // RAUC leaving the bus mid-install would otherwise look like a hang until the timeout.
        // Subscribed first, so that RAUC restarting between the owner lookup below and our
        // call is reported too rather than leaving us on a stale unique name.
        let rule = MatchRule::builder()
            .msg_type(MessageType::Signal)
            .sender("org.freedesktop.DBus")
            .and_then(|b| b.interface("org.freedesktop.DBus"))
            .and_then(|b| b.member("NameOwnerChanged"))
            .and_then(|b| b.add_arg(SERVICE))
            .map_err(|source| RaucError::DBus {
                method: "AddMatch",
                source: Box::new(source),
            })?
            .build();
        let owner_changes = subscribe(rule, &self.conn).await?;
        // Signals carry the sender's unique name, never the well-known one, so the match rule
        // (and zbus' own filtering) needs RAUC's current unique name.
        let owner = self.owner().await?;
        let rule = MatchRule::builder()
            .msg_type(MessageType::Signal)
            .sender(owner.as_str())
            .and_then(|b| b.path(PATH))
            .map_err(|source| RaucError::DBus {
                method: "AddMatch",
                source: Box::new(source),
            })?
            .build();
        let signals = subscribe(rule, &self.conn).await?;

        // Sent to the unique name we subscribed to, not the well-known one: if RAUC restarted
        // in between, the call fails (NotRunning, retry) instead of reaching a RAUC whose
        // signals we would not see.
        let reply = self
            .conn
            .call_method(
                Some(owner.as_str()),
                PATH,
                Some(INTERFACE),
                "InstallBundle",
                &(source.as_str(), args.to_dbus()),
            )
            .await
            .map_err(|err| RaucError::from_call("InstallBundle", err))?;
        tracing::debug!(bundle = %bundle.display(), "RAUC accepted InstallBundle");

        let watch = Watch {
            signals,
            owner_changes,
            proxy: self.proxy.clone(),
            accepted: reply.recv_position(),
            bundle: bundle.clone(),
            last_error: None,
            finished: false,
        };
        let events = futures_util::stream::unfold(watch, |mut watch| async move {
            let event = watch.next_event().await?;
            Some((event, watch))
        })
        // `unfold` panics if polled after its end; an Installation may be, like any stream.
        .fuse()
        .boxed();
        Ok(Installation { events, bundle })
    }

    /// `Mark(state, slot)`; `slot` is `booted`, `other` or a slot name such as `rootfs.1`.
    pub async fn mark(&self, state: MarkState, slot: &str) -> Result<Marked, RaucError> {
        let (slot, message) = self
            .proxy
            .mark(state.as_str(), slot)
            .await
            .map_err(|err| RaucError::from_call("Mark", err))?;
        Ok(Marked { slot, message })
    }

    /// Marks the booted slot good: what the health check does once the new system works.
    pub async fn mark_good_booted(&self) -> Result<Marked, RaucError> {
        self.mark(MarkState::Good, "booted").await
    }

    /// Marks the booted slot bad, so the bootloader falls back on the next boot.
    pub async fn mark_bad_booted(&self) -> Result<Marked, RaucError> {
        self.mark(MarkState::Bad, "booted").await
    }

    /// Makes `slot` (`other` or a slot name) the one the bootloader boots next.
    pub async fn mark_active(&self, slot: &str) -> Result<Marked, RaucError> {
        self.mark(MarkState::Active, slot).await
    }

    /// Every slot, typed and sorted by name, with [`SlotStatus::is_primary`] filled from
    /// `GetPrimary` (left `None` if the bootloader could not say).
    pub async fn slot_status(&self) -> Result<Vec<SlotStatus>, RaucError> {
        let raw = self
            .proxy
            .get_slot_status()
            .await
            .map_err(|err| RaucError::from_call("GetSlotStatus", err))?;
        let primary = match self.primary().await {
            Ok(primary) => Some(primary),
            Err(err) if err.is_transient() => return Err(err),
            Err(err) => {
                tracing::debug!(%err, "GetPrimary failed; slot status without primary");
                None
            }
        };
        let mut slots: Vec<SlotStatus> = raw
            .into_iter()
            .map(|(name, map)| {
                let mut slot = SlotStatus::from_dbus(name, map);
                slot.is_primary = primary.as_deref().map(|p| p == slot.name);
                slot
            })
            .collect();
        slots.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(slots)
    }

    /// `GetPrimary`: name of the slot the bootloader boots next, e.g. `rootfs.1`.
    pub async fn primary(&self) -> Result<String, RaucError> {
        self.proxy
            .get_primary()
            .await
            .map_err(|err| RaucError::from_call("GetPrimary", err))
    }

    /// `Info`: checks the bundle's signature against RAUC's keyring and returns its compatible
    /// and version.
    pub async fn info(&self, bundle: impl AsRef<Path>) -> Result<BundleInfo, RaucError> {
        let (_, source) = bundle_source(bundle.as_ref())?;
        let (compatible, version) = self
            .proxy
            .info(&source)
            .await
            .map_err(|err| RaucError::from_call("Info", err))?;
        Ok(BundleInfo {
            compatible,
            version,
        })
    }

    /// The `Operation` property (see [`Operation`] for why `Idle` does not mean "free").
    pub async fn operation(&self) -> Result<Operation, RaucError> {
        let text = self
            .proxy
            .operation()
            .await
            .map_err(|err| RaucError::from_call("Get(Operation)", err))?;
        Ok(Operation::from(text))
    }

    /// The `LastError` property: RAUC's message about the last failed install, empty if none.
    pub async fn last_error(&self) -> Result<String, RaucError> {
        self.proxy
            .last_error()
            .await
            .map_err(|err| RaucError::from_call("Get(LastError)", err))
    }

    /// The `Progress` property.
    pub async fn progress(&self) -> Result<Progress, RaucError> {
        self.proxy
            .progress()
            .await
            .map(Progress::from)
            .map_err(|err| RaucError::from_call("Get(Progress)", err))
    }

    /// The `Compatible` property: the system's compatible string.
    pub async fn compatible(&self) -> Result<String, RaucError> {
        self.proxy
            .compatible()
            .await
            .map_err(|err| RaucError::from_call("Get(Compatible)", err))
    }

    /// The `Variant` property, empty when the system has none.
    pub async fn variant(&self) -> Result<String, RaucError> {
        self.proxy
            .variant()
            .await
            .map_err(|err| RaucError::from_call("Get(Variant)", err))
    }

    /// The `BootSlot` property: bootname of the slot the system booted from (`A`, `B`).
    pub async fn boot_slot(&self) -> Result<String, RaucError> {
        self.proxy
            .boot_slot()
            .await
            .map_err(|err| RaucError::from_call("Get(BootSlot)", err))
    }

    /// RAUC's unique name on the bus, or [`RaucError::NotRunning`].
    async fn owner(&self) -> Result<String, RaucError> {
        let dbus = zbus::fdo::DBusProxy::new(&self.conn)
            .await
            .map_err(|source| RaucError::DBus {
                method: "(create org.freedesktop.DBus proxy)",
                source: Box::new(source),
            })?;
        let name = BusName::try_from(SERVICE).map_err(|err| RaucError::DBus {
            method: "GetNameOwner",
            source: Box::new(err.into()),
        })?;
        let owner = dbus
            .get_name_owner(name)
            .await
            .map_err(|err| RaucError::from_call("GetNameOwner", err.into()))?;
        Ok(owner.to_string())
    }
}

/// One install, from the moment RAUC accepted it: a [`Stream`] of every `Progress` update in
/// the order RAUC sent them. The stream ends after `Completed(0)`; if the install fails its last
/// item is [`RaucError::InstallFailed`] carrying RAUC's `LastError`. It has no timeout of its
/// own: wrap `next()` in one, or use [`Installation::wait`].
///
/// Dropping it stops following the install (RAUC goes on) and removes the match rules.
pub struct Installation {
    events: BoxStream<'static, Result<Progress, RaucError>>,
    bundle: PathBuf,
}

impl std::fmt::Debug for Installation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Installation")
            .field("bundle", &self.bundle)
            .finish_non_exhaustive()
    }
}

impl Installation {
    /// The bundle as RAUC was given it (absolute).
    pub fn bundle(&self) -> &Path {
        &self.bundle
    }

    /// Follows the install to its end, passing every progress update to `on_progress`; see
    /// [`RaucClient::install`] for the outcomes.
    pub async fn wait(
        self,
        timeout: Duration,
        on_progress: impl FnMut(&Progress),
    ) -> Result<(), RaucError> {
        self.wait_until(Instant::now() + timeout, timeout, on_progress)
            .await
    }

    async fn wait_until(
        mut self,
        deadline: Instant,
        timeout: Duration,
        mut on_progress: impl FnMut(&Progress),
    ) -> Result<(), RaucError> {
        loop {
            match tokio::time::timeout_at(deadline, self.events.next()).await {
                Err(_) => {
                    return Err(RaucError::Timeout {
                        operation: "install",
                        timeout,
                    });
                }
                Ok(None) => return Ok(()),
                Ok(Some(Ok(progress))) => on_progress(&progress),
                Ok(Some(Err(err))) => return Err(err),
            }
        }
    }
}

impl Stream for Installation {
    type Item = Result<Progress, RaucError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.poll_next_unpin(cx)
    }
}

/// The state behind an [`Installation`]'s stream.
struct Watch {
    /// Every signal RAUC sends from `/`, in the order it sent them: property changes and
    /// `Completed` on one stream, so a failure's `LastError` and its `Completed` cannot swap.
    signals: MessageStream,
    owner_changes: MessageStream,
    proxy: InstallerProxy<'static>,
    /// Where the reply to `InstallBundle` sits in the connection's receive order.
    accepted: Sequence,
    bundle: PathBuf,
    /// The last `LastError` seen in a property change, in case reading it afterwards fails.
    last_error: Option<String>,
    finished: bool,
}

impl Watch {
    async fn next_event(&mut self) -> Option<Result<Progress, RaucError>> {
        if self.finished {
            return None;
        }
        loop {
            // Biased towards RAUC's own signals: zbus queues each message into every matching
            // stream before reading the next one, so anything RAUC sent before it left the bus
            // is already waiting here when the NameOwnerChanged arrives.
            let message = tokio::select! {
                biased;
                message = self.signals.next() => message,
                _ = self.owner_changes.next() => {
                    self.finished = true;
                    return Some(Err(RaucError::ServiceLost { bundle: self.bundle.clone() }));
                }
            };
            let message = match message {
                Some(Ok(message)) => message,
                Some(Err(source)) => return Some(Err(self.fail("(signal stream)", source))),
                None => {
                    let source = zbus::Error::Failure("the bus connection closed".into());
                    return Some(Err(self.fail("(signal stream)", source)));
                }
            };
            match self.handle(&message).await {
                Step::Continue => {}
                Step::Progress(progress) => return Some(Ok(progress)),
                Step::Done(Ok(())) => {
                    self.finished = true;
                    return None;
                }
                Step::Done(Err(err)) => {
                    self.finished = true;
                    return Some(Err(err));
                }
            }
        }
    }

    async fn handle(&mut self, message: &Message) -> Step {
        let header = message.header();
        let interface = header.interface().map(|i| i.as_str());
        let member = header.member().map(|m| m.as_str());
        match (interface, member) {
            (Some(INTERFACE), Some("Completed")) => {
                let result: i32 = match message.body().deserialize() {
                    Ok(result) => result,
                    Err(err) => return Step::Done(Err(self.protocol("Completed", err))),
                };
                if message.recv_position() < self.accepted {
                    tracing::debug!(result, "skipping Completed of an earlier install");
                    return Step::Continue;
                }
                if result == 0 {
                    return Step::Done(Ok(()));
                }
                // RAUC sets LastError before it sends Completed, so reading it now gives this
                // install's message even if its PropertiesChanged is still on the way.
                let last_error = match self.proxy.last_error().await {
                    Ok(text) if !text.is_empty() => text,
                    Ok(_) | Err(_) => self
                        .last_error
                        .take()
                        .unwrap_or_else(|| "RAUC set no LastError".to_owned()),
                };
                Step::Done(Err(RaucError::InstallFailed {
                    bundle: self.bundle.clone(),
                    result,
                    last_error,
                }))
            }
            (Some(PROPERTIES_INTERFACE), Some("PropertiesChanged")) => {
                let body = message.body();
                let (changed_interface, changed, _invalidated): (
                    String,
                    std::collections::HashMap<String, OwnedValue>,
                    Vec<String>,
                ) = match body.deserialize() {
                    Ok(args) => args,
                    Err(err) => return Step::Done(Err(self.protocol("PropertiesChanged", err))),
                };
                if changed_interface != INTERFACE {
                    return Step::Continue;
                }
                if let Some(text) = changed
                    .get("LastError")
                    .and_then(|v| <&str>::try_from(v).ok())
                    && !text.is_empty()
                {
                    self.last_error = Some(text.to_owned());
                }
                match changed.get("Progress") {
                    None => Step::Continue,
                    Some(value) => match <(i32, String, i32)>::try_from(&**value) {
                        Ok(progress) => Step::Progress(Progress::from(progress)),
                        Err(err) => Step::Done(Err(self.protocol("Progress", err))),
                    },
                }
            }
            _ => Step::Continue,
        }
    }

    fn fail(&mut self, method: &'static str, source: zbus::Error) -> RaucError {
        self.finished = true;
        RaucError::DBus {
            method,
            source: Box::new(source),
        }
    }

    fn protocol(&self, method: &'static str, err: impl std::fmt::Display) -> RaucError {
        RaucError::Protocol {
            method,
            detail: err.to_string(),
        }
    }
}

enum Step {
    Continue,
    Progress(Progress),
    Done(Result<(), RaucError>),
}

async fn subscribe(rule: MatchRule<'_>, conn: &Connection) -> Result<MessageStream, RaucError> {
    MessageStream::for_match_rule(rule, conn, Some(SIGNAL_QUEUE))
        .await
        .map_err(|source| RaucError::DBus {
            method: "AddMatch",
            source: Box::new(source),
        })
}

/// The absolute path RAUC should open (it resolves relative paths against its own working
/// directory, not ours) and its UTF-8 form (D-Bus strings must be UTF-8).
fn bundle_source(bundle: &Path) -> Result<(PathBuf, String), RaucError> {
    let absolute = std::path::absolute(bundle).map_err(|err| RaucError::BundlePath {
        path: bundle.to_owned(),
        reason: format!("cannot make it absolute: {err}"),
    })?;
    let text = absolute
        .to_str()
        .ok_or_else(|| RaucError::BundlePath {
            path: absolute.clone(),
            reason: "not valid UTF-8, which D-Bus cannot carry: rename the file".into(),
        })?
        .to_owned();
    Ok((absolute, text))
}
