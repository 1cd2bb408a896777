//! How one cinema event changes the read models, as pure functions over
//! documents; the stores run them inside one transaction:
//!
//! 1. load the event's own document ([`Change::target`]);
//! 2. load the documents it may touch ([`Change::lookups`]: none when the
//!    own document is already as new as the event);
//! 3. compute the documents to write ([`Change::project`]: none when
//!    nothing changes, which is how a duplicate or a stale event ends).
//!
//! Convergence: a document's own part changes only for a newer version of
//! its aggregate, and each copy inside it only for a newer version of the
//! copied aggregate; lists are kept sorted. Whatever the order or number of
//! deliveries, the documents end up as the latest versions describe them.

use std::cmp::Ordering;

use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;
use zocalo_contracts::cinema::{
    self as contract, ChainSaved, CinemaSaved, Deleted, MovieSaved, PurchaseCompleted,
    PurchaseRefunded, RoomSaved, SeatMapState, ShowtimeSaved, TicketsDocumentReady,
};

use crate::documents::{
    COMPLETED, ChainView, CinemaCard, CinemaView, Doc, Key, Keys, Kind, MovieRef, MovieView,
    NamedRef, PurchaseView, REFUNDED, RoomView, SeatMapView, ShowtimeCard, ShowtimeRef,
    ShowtimeView,
};

/// A cinema event the read models understand.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    ChainSaved(ChainSaved),
    CinemaSaved(CinemaSaved),
    RoomSaved(RoomSaved),
    MovieSaved(MovieSaved),
    ShowtimeSaved(ShowtimeSaved),
    /// A chain, cinema, room or movie deleted.
    Deleted(Kind, Deleted),
    Purchased(PurchaseCompleted),
    Refunded(PurchaseRefunded),
    TicketsReady(TicketsDocumentReady),
}

/// Documents to load before projecting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lookup {
    /// One document, tombstone included.
    Id(Kind, Uuid),
    /// The live documents of a kind whose key column holds the id.
    Key(Kind, Key, Uuid),
}

impl Change {
    /// The change an event describes; `Ok(None)` for a kind the read models
    /// do not show (new kinds are skipped, not failed on).
    pub fn parse(kind: &str, payload: &serde_json::Value) -> Result<Option<Change>, String> {
        fn read<T: DeserializeOwned>(kind: &str, payload: &serde_json::Value) -> Result<T, String> {
            T::deserialize(payload).map_err(|e| format!("unreadable `{kind}` payload: {e}"))
        }
        let deleted = |target| read(kind, payload).map(|d| Some(Change::Deleted(target, d)));
        match kind {
            contract::CHAIN_SAVED => read(kind, payload).map(|c| Some(Change::ChainSaved(c))),
            contract::CINEMA_SAVED => read(kind, payload).map(|c| Some(Change::CinemaSaved(c))),
            contract::ROOM_SAVED => read(kind, payload).map(|c| Some(Change::RoomSaved(c))),
            contract::MOVIE_SAVED => read(kind, payload).map(|c| Some(Change::MovieSaved(c))),
            contract::SHOWTIME_SAVED => read(kind, payload).map(|c| Some(Change::ShowtimeSaved(c))),
            contract::CHAIN_DELETED => deleted(Kind::Chain),
            contract::CINEMA_DELETED => deleted(Kind::Cinema),
            contract::ROOM_DELETED => deleted(Kind::Room),
            contract::MOVIE_DELETED => deleted(Kind::Movie),
            contract::PURCHASE_COMPLETED => read(kind, payload).map(|c| Some(Change::Purchased(c))),
            contract::PURCHASE_REFUNDED => read(kind, payload).map(|c| Some(Change::Refunded(c))),
            contract::TICKETS_DOCUMENT_READY => {
                read(kind, payload).map(|c| Some(Change::TicketsReady(c)))
            }
            _ => Ok(None),
        }
    }

    /// The document this event is about.
    pub fn target(&self) -> (Kind, Uuid) {
        match self {
            Change::ChainSaved(c) => (Kind::Chain, c.chain_id),
            Change::CinemaSaved(c) => (Kind::Cinema, c.cinema_id),
            Change::RoomSaved(r) => (Kind::Room, r.room_id),
            Change::MovieSaved(m) => (Kind::Movie, m.movie_id),
            Change::ShowtimeSaved(s) => (Kind::Showtime, s.showtime_id),
            Change::Deleted(kind, d) => (*kind, d.id),
            Change::Purchased(p) => (Kind::Purchase, p.purchase_id),
            Change::Refunded(p) => (Kind::Purchase, p.purchase_id),
            Change::TicketsReady(t) => (Kind::Purchase, t.purchase_id),
        }
    }

    /// The version of the target aggregate this event carries; `None` for
    /// purchases, which merge instead (see [`PurchaseView::rank`]).
    fn version(&self) -> Option<i64> {
        match self {
            Change::ChainSaved(c) => Some(c.version),
            Change::CinemaSaved(c) => Some(c.version),
            Change::RoomSaved(r) => Some(r.version),
            Change::MovieSaved(m) => Some(m.version),
            Change::ShowtimeSaved(s) => Some(s.version),
            Change::Deleted(_, d) => Some(d.version),
            Change::Purchased(_) | Change::Refunded(_) | Change::TicketsReady(_) => None,
        }
    }

    /// Whether the event is older than, or the same as, what `own` holds.
    fn is_stale(&self, own: Option<&Doc>) -> bool {
        match (self.version(), own) {
            (Some(version), Some(own)) => version <= own.version,
            _ => false,
        }
    }

    /// The documents [`Change::project`] needs besides the target.
    pub fn lookups(&self, own: Option<&Doc>) -> Vec<Lookup> {
        if self.is_stale(own) {
            return Vec::new();
        }
        let old = |key| own.and_then(|doc| doc.keys.get(key));
        let mut lookups = match self {
            Change::ChainSaved(ChainSaved { chain_id: id, .. })
            | Change::Deleted(Kind::Chain, Deleted { id, .. }) => vec![
                Lookup::Key(Kind::Cinema, Key::Chain, *id),
                Lookup::Key(Kind::Showtime, Key::Chain, *id),
                Lookup::Key(Kind::Purchase, Key::Chain, *id),
            ],
            Change::CinemaSaved(c) => vec![
                Lookup::Id(Kind::Chain, c.chain_id),
                Lookup::Key(Kind::Room, Key::Cinema, c.cinema_id),
                Lookup::Key(Kind::Showtime, Key::Cinema, c.cinema_id),
                Lookup::Key(Kind::Purchase, Key::Cinema, c.cinema_id),
            ],
            Change::Deleted(Kind::Cinema, d) => vec![
                Lookup::Key(Kind::Showtime, Key::Cinema, d.id),
                Lookup::Key(Kind::Purchase, Key::Cinema, d.id),
            ],
            Change::RoomSaved(r) => vec![
                Lookup::Id(Kind::Cinema, r.cinema_id),
                Lookup::Key(Kind::Showtime, Key::Room, r.room_id),
                Lookup::Key(Kind::SeatMap, Key::Room, r.room_id),
                Lookup::Key(Kind::Purchase, Key::Room, r.room_id),
            ],
            Change::Deleted(Kind::Room, d) => vec![
                Lookup::Key(Kind::Showtime, Key::Room, d.id),
                Lookup::Key(Kind::SeatMap, Key::Room, d.id),
                Lookup::Key(Kind::Purchase, Key::Room, d.id),
            ],
            Change::MovieSaved(MovieSaved { movie_id: id, .. })
            | Change::Deleted(Kind::Movie, Deleted { id, .. }) => vec![
                Lookup::Key(Kind::Showtime, Key::Movie, *id),
                Lookup::Key(Kind::Purchase, Key::Movie, *id),
            ],
            Change::ShowtimeSaved(s) => vec![
                Lookup::Id(Kind::Movie, s.movie_id),
                Lookup::Id(Kind::Room, s.room_id),
                Lookup::Id(Kind::Cinema, s.cinema_id),
                Lookup::Id(Kind::Chain, s.chain_id),
                Lookup::Id(Kind::SeatMap, s.showtime_id),
                Lookup::Key(Kind::Purchase, Key::Showtime, s.showtime_id),
            ],
            Change::Purchased(PurchaseCompleted { showtime_id, .. })
            | Change::Refunded(PurchaseRefunded { showtime_id, .. }) => vec![
                Lookup::Id(Kind::Showtime, *showtime_id),
                Lookup::Id(Kind::SeatMap, *showtime_id),
            ],
            Change::Deleted(..) | Change::TicketsReady(_) => Vec::new(),
        };
        // The parent the document leaves, when it moves or is deleted.
        let parent = match self {
            Change::CinemaSaved(_) | Change::Deleted(Kind::Cinema, _) => {
                old(Key::Chain).map(|id| Lookup::Id(Kind::Chain, id))
            }
            Change::RoomSaved(_) | Change::Deleted(Kind::Room, _) => {
                old(Key::Cinema).map(|id| Lookup::Id(Kind::Cinema, id))
            }
            Change::ShowtimeSaved(_) => old(Key::Movie).map(|id| Lookup::Id(Kind::Movie, id)),
            _ => None,
        };
        if let Some(parent) = parent
            && !lookups.contains(&parent)
        {
            lookups.push(parent);
        }
        lookups
    }

    /// The documents to write: the target's and those showing copies of it.
    /// Empty when the event changes nothing.
    pub fn project(&self, own: Option<&Doc>, related: &[Doc]) -> Vec<Doc> {
        if self.is_stale(own) {
            return Vec::new();
        }
        let related = Related(related);
        match self {
            Change::ChainSaved(c) => project_chain(c, &related),
            Change::CinemaSaved(c) => project_cinema(c, own, &related),
            Change::RoomSaved(r) => project_room(r, own, &related),
            Change::MovieSaved(m) => project_movie(m, &related),
            Change::ShowtimeSaved(s) => project_showtime(s, own, &related),
            Change::Deleted(kind, d) => project_deletion(*kind, d, own, &related),
            Change::Purchased(p) => project_purchase(
                own,
                &related,
                p.showtime_id,
                &p.seat_map,
                |view| {
                    view.customer_id = p.customer_id;
                    view.tickets = p.tickets.clone();
                    view.total_cents = p.total_cents;
                    view.currency = p.currency.clone();
                    view.purchased_at = Some(p.at);
                    if view.status.is_none() {
                        view.status = Some(COMPLETED.into());
                    }
                },
                p.purchase_id,
            ),
            Change::Refunded(p) => project_purchase(
                own,
                &related,
                p.showtime_id,
                &p.seat_map,
                |view| {
                    view.customer_id = p.customer_id;
                    view.refunded_at = Some(p.at);
                    view.status = Some(REFUNDED.into());
                },
                p.purchase_id,
            ),
            Change::TicketsReady(t) => {
                let mut view = purchase_of(own, t.purchase_id, t.customer_id);
                view.tickets_pdf_ready = true;
                changed_doc(own, view).into_iter().collect()
            }
        }
    }
}

/// The loaded documents, searched by kind and id or key.
struct Related<'a>(&'a [Doc]);

impl Related<'_> {
    /// The live view of one document.
    fn view<V: View>(&self, id: Uuid) -> Option<V> {
        self.0
            .iter()
            .find(|doc| doc.kind == V::KIND && doc.id == id)
            .and_then(Doc::view)
    }

    /// Whether a document (tombstone included) was loaded.
    fn has(&self, kind: Kind, id: Uuid) -> bool {
        self.0.iter().any(|doc| doc.kind == kind && doc.id == id)
    }

    /// The live documents of `V`'s kind whose `key` is `id`.
    fn with_key<V: View>(&self, key: Key, id: Uuid) -> impl Iterator<Item = &Doc> {
        self.0
            .iter()
            .filter(move |doc| doc.kind == V::KIND && !doc.deleted && doc.keys.get(key) == Some(id))
    }

    /// Apply `patch` to each live document of `V`'s kind whose `key` is `id`;
    /// the documents it changed.
    fn patch<V: View>(&self, key: Key, id: Uuid, patch: impl Fn(&mut V) -> bool) -> Vec<Doc> {
        self.with_key::<V>(key, id)
            .filter_map(|doc| {
                let mut view: V = doc.view()?;
                patch(&mut view).then(|| view.into_doc())
            })
            .collect()
    }

    /// Apply `patch` to the document `id` of `V`'s kind, if loaded and live.
    fn patch_one<V: View>(&self, id: Uuid, patch: impl FnOnce(&mut V) -> bool) -> Option<Doc> {
        let mut view: V = self.view(id)?;
        patch(&mut view).then(|| view.into_doc())
    }
}

/// A document body type and the columns it is found by.
pub trait View: Versioned + Serialize + DeserializeOwned {
    const KIND: Kind;
    /// Fill the search columns of `doc` from the view.
    fn columns(&self, doc: &mut Doc);

    fn into_doc(self) -> Doc {
        let mut doc = Doc::empty(Self::KIND, self.id(), self.version());
        self.columns(&mut doc);
        doc.body = serde_json::to_value(&self).expect("views serialize");
        doc
    }
}

impl View for ChainView {
    const KIND: Kind = Kind::Chain;
    fn columns(&self, doc: &mut Doc) {
        doc.name = Some(self.name.to_lowercase());
    }
}

impl View for CinemaView {
    const KIND: Kind = Kind::Cinema;
    fn columns(&self, doc: &mut Doc) {
        doc.keys.chain_id = Some(self.chain_id);
        doc.city = Some(self.city.to_lowercase());
        doc.name = Some(self.name.to_lowercase());
    }
}

impl View for RoomView {
    const KIND: Kind = Kind::Room;
    fn columns(&self, doc: &mut Doc) {
        doc.keys.cinema_id = Some(self.cinema_id);
        doc.name = Some(self.name.to_lowercase());
    }
}

impl View for MovieView {
    const KIND: Kind = Kind::Movie;
    fn columns(&self, doc: &mut Doc) {
        doc.name = Some(self.title.to_lowercase());
    }
}

impl View for ShowtimeView {
    const KIND: Kind = Kind::Showtime;
    fn columns(&self, doc: &mut Doc) {
        doc.keys = showtime_keys(self);
        doc.at = Some(self.starts_at);
        doc.status = Some(self.status.clone());
    }
}

impl Versioned for SeatMapView {
    fn id(&self) -> Uuid {
        self.showtime_id
    }
    fn version(&self) -> i64 {
        self.version
    }
}

impl View for SeatMapView {
    const KIND: Kind = Kind::SeatMap;
    fn columns(&self, doc: &mut Doc) {
        doc.keys.showtime_id = Some(self.showtime_id);
        doc.keys.room_id = self.showtime.as_ref().map(|s| s.room_id);
    }
}

impl Versioned for PurchaseView {
    fn id(&self) -> Uuid {
        self.id
    }
    fn version(&self) -> i64 {
        self.rank()
    }
}

impl View for PurchaseView {
    const KIND: Kind = Kind::Purchase;
    fn columns(&self, doc: &mut Doc) {
        if let Some(showtime) = &self.showtime {
            doc.keys = showtime_keys(showtime);
        }
        doc.keys.showtime_id = self.showtime_id;
        doc.keys.customer_id = Some(self.customer_id);
        doc.at = self.purchased_at.or(self.refunded_at);
    }
}

fn showtime_keys(view: &ShowtimeView) -> Keys {
    Keys {
        chain_id: Some(view.chain_id),
        cinema_id: Some(view.cinema_id),
        room_id: Some(view.room_id),
        movie_id: Some(view.movie_id),
        showtime_id: Some(view.id),
        customer_id: None,
    }
}

/// Something with an identity and a version: a document, or a copy of one
/// inside another.
pub trait Versioned {
    fn id(&self) -> Uuid;
    fn version(&self) -> i64;
}

macro_rules! versioned {
    ($($ty:ty),*) => {$(
        impl Versioned for $ty {
            fn id(&self) -> Uuid { self.id }
            fn version(&self) -> i64 { self.version }
        }
    )*};
}
versioned!(
    ChainView,
    CinemaView,
    MovieView,
    NamedRef,
    CinemaCard,
    RoomView,
    MovieRef,
    ShowtimeCard,
    ShowtimeView,
    ShowtimeRef
);

/// Put `new` into `slot` unless the slot holds the same aggregate at the
/// same or a newer version. A different aggregate (a showtime moved to
/// another room) is replaced: the holder's own version decided that.
fn put<T: Versioned + PartialEq>(slot: &mut Option<T>, new: T) -> bool {
    let keep = slot
        .as_ref()
        .is_some_and(|old| old.id() == new.id() && old.version() >= new.version());
    if keep || slot.as_ref() == Some(&new) {
        return false;
    }
    *slot = Some(new);
    true
}

/// Empty `slot` if it holds aggregate `id` older than its deletion.
fn clear<T: Versioned>(slot: &mut Option<T>, id: Uuid, version: i64) -> bool {
    if slot
        .as_ref()
        .is_some_and(|old| old.id() == id && old.version() < version)
    {
        *slot = None;
        return true;
    }
    false
}

/// [`put`] the new copy of aggregate `id`, or [`clear`] it when `new` is
/// `None` (the aggregate was deleted at `version`).
fn set<T: Versioned + PartialEq>(
    slot: &mut Option<T>,
    id: Uuid,
    version: i64,
    new: Option<T>,
) -> bool {
    match new {
        Some(new) => put(slot, new),
        None => clear(slot, id, version),
    }
}

/// The copies of chain `id` in its cinemas, showtimes and purchases, set to
/// `new` (`None`: deleted).
fn chain_copies(related: &Related<'_>, id: Uuid, version: i64, new: Option<NamedRef>) -> Vec<Doc> {
    let mut docs = related.patch::<CinemaView>(Key::Chain, id, |cinema| {
        set(&mut cinema.chain, id, version, new.clone())
    });
    docs.extend(patch_showtimes(related, Key::Chain, id, |s| {
        set(&mut s.chain, id, version, new.clone())
    }));
    docs
}

/// The copies of cinema `id` in showtimes and purchases.
fn cinema_copies(
    related: &Related<'_>,
    id: Uuid,
    version: i64,
    new: Option<CinemaCard>,
) -> Vec<Doc> {
    patch_showtimes(related, Key::Cinema, id, |s| {
        set(&mut s.cinema, id, version, new.clone())
    })
}

/// The copies of room `id` in showtimes, purchases and seat maps.
fn room_copies(related: &Related<'_>, id: Uuid, version: i64, new: Option<&RoomView>) -> Vec<Doc> {
    let mut docs = patch_showtimes(related, Key::Room, id, |s| {
        set(&mut s.room, id, version, new.map(room_ref))
    });
    docs.extend(related.patch::<SeatMapView>(Key::Room, id, |seats| {
        set(&mut seats.room, id, version, new.cloned())
    }));
    docs
}

/// The copies of movie `id` in showtimes and purchases.
fn movie_copies(related: &Related<'_>, id: Uuid, version: i64, new: Option<MovieRef>) -> Vec<Doc> {
    patch_showtimes(related, Key::Movie, id, |s| {
        set(&mut s.movie, id, version, new.clone())
    })
}

/// Insert or replace `new` in a sorted list unless the list holds it at the
/// same or a newer version.
fn upsert<T: Versioned + PartialEq>(
    list: &mut Vec<T>,
    new: T,
    order: impl Fn(&T, &T) -> Ordering,
) -> bool {
    if let Some(old) = list.iter().find(|old| old.id() == new.id())
        && (old.version() >= new.version() || *old == new)
    {
        return false;
    }
    list.retain(|old| old.id() != new.id());
    list.push(new);
    list.sort_by(order);
    true
}

/// Remove aggregate `id` from a list if it is there older than `version`.
fn remove<T: Versioned>(list: &mut Vec<T>, id: Uuid, version: i64) -> bool {
    let before = list.len();
    list.retain(|old| old.id() != id || old.version() >= version);
    list.len() != before
}

fn by_name_cinema(a: &CinemaCard, b: &CinemaCard) -> Ordering {
    (a.name.to_lowercase(), a.id).cmp(&(b.name.to_lowercase(), b.id))
}

fn by_name_room(a: &RoomView, b: &RoomView) -> Ordering {
    (a.name.to_lowercase(), a.id).cmp(&(b.name.to_lowercase(), b.id))
}

fn by_start(a: &ShowtimeCard, b: &ShowtimeCard) -> Ordering {
    (a.starts_at, a.id).cmp(&(b.starts_at, b.id))
}

fn chain_ref(view: &ChainView) -> NamedRef {
    NamedRef {
        id: view.id,
        version: view.version,
        name: view.name.clone(),
    }
}

fn cinema_card(view: &CinemaView) -> CinemaCard {
    CinemaCard {
        id: view.id,
        version: view.version,
        name: view.name.clone(),
        city: view.city.clone(),
        address: view.address.clone(),
    }
}

fn room_ref(view: &RoomView) -> NamedRef {
    NamedRef {
        id: view.id,
        version: view.version,
        name: view.name.clone(),
    }
}

fn movie_ref(view: &MovieView) -> MovieRef {
    MovieRef {
        id: view.id,
        version: view.version,
        title: view.title.clone(),
        duration_min: view.duration_min,
        classification: view.classification.clone(),
    }
}

fn showtime_card(view: &ShowtimeView) -> ShowtimeCard {
    ShowtimeCard {
        id: view.id,
        version: view.version,
        starts_at: view.starts_at,
        ends_at: view.ends_at,
        cinema_id: view.cinema_id,
        room_id: view.room_id,
        status: view.status.clone(),
    }
}

fn showtime_ref(view: &ShowtimeView) -> ShowtimeRef {
    ShowtimeRef {
        id: view.id,
        version: view.version,
        starts_at: view.starts_at,
        status: view.status.clone(),
        room_id: view.room_id,
    }
}

/// `Key`s a purchase's embedded showtime is found by, patched in place.
fn patch_purchases(
    related: &Related<'_>,
    key: Key,
    id: Uuid,
    patch: impl Fn(&mut ShowtimeView) -> bool,
) -> Vec<Doc> {
    related.patch::<PurchaseView>(key, id, |purchase| {
        purchase.showtime.as_mut().is_some_and(&patch)
    })
}

/// The showtimes (their own documents and the copies in purchases) that
/// show aggregate `id` through `key`, patched.
fn patch_showtimes(
    related: &Related<'_>,
    key: Key,
    id: Uuid,
    patch: impl Fn(&mut ShowtimeView) -> bool,
) -> Vec<Doc> {
    let mut docs = related.patch::<ShowtimeView>(key, id, &patch);
    docs.extend(patch_purchases(related, key, id, patch));
    docs
}

/// `card` of every live `V` document whose `key` is `id`, in `order`: the
/// list a parent document gathers from its children when it is rebuilt.
fn gathered<V: View, C>(
    related: &Related<'_>,
    key: Key,
    id: Uuid,
    card: impl Fn(&V) -> C,
    order: impl Fn(&C, &C) -> Ordering,
) -> Vec<C> {
    let mut cards: Vec<C> = related
        .with_key::<V>(key, id)
        .filter_map(|doc| doc.view::<V>())
        .map(|view| card(&view))
        .collect();
    cards.sort_by(order);
    cards
}

/// Take aggregate `id` out of the list of the parent it had before (the
/// parent `key` of `own`), if it moved away from it to `new_parent`
/// (`Uuid::nil()` when it has no parent any more: it was deleted).
fn leave_old_parent<P: View, T: Versioned>(
    related: &Related<'_>,
    own: Option<&Doc>,
    key: Key,
    new_parent: Uuid,
    list: impl FnOnce(&mut P) -> &mut Vec<T>,
    id: Uuid,
    version: i64,
) -> Option<Doc> {
    let old_parent = own.and_then(|doc| doc.keys.get(key))?;
    if old_parent == new_parent {
        return None;
    }
    related.patch_one::<P>(old_parent, |parent| remove(list(parent), id, version))
}

fn project_chain(c: &ChainSaved, related: &Related<'_>) -> Vec<Doc> {
    let cinemas = gathered(related, Key::Chain, c.chain_id, cinema_card, by_name_cinema);
    let view = ChainView {
        id: c.chain_id,
        version: c.version,
        name: c.name.clone(),
        description: c.description.clone(),
        cinemas,
    };
    let reference = chain_ref(&view);
    let mut docs = vec![view.into_doc()];
    docs.extend(chain_copies(
        related,
        c.chain_id,
        c.version,
        Some(reference),
    ));
    docs
}

fn project_cinema(c: &CinemaSaved, own: Option<&Doc>, related: &Related<'_>) -> Vec<Doc> {
    let rooms = gathered(
        related,
        Key::Cinema,
        c.cinema_id,
        RoomView::clone,
        by_name_room,
    );
    let view = CinemaView {
        id: c.cinema_id,
        version: c.version,
        chain_id: c.chain_id,
        name: c.name.clone(),
        city: c.city.clone(),
        address: c.address.clone(),
        chain: related.view::<ChainView>(c.chain_id).map(|v| chain_ref(&v)),
        rooms,
    };
    let card = cinema_card(&view);
    let mut docs = vec![view.into_doc()];
    docs.extend(related.patch_one::<ChainView>(c.chain_id, |chain| {
        upsert(&mut chain.cinemas, card.clone(), by_name_cinema)
    }));
    docs.extend(leave_old_parent(
        related,
        own,
        Key::Chain,
        c.chain_id,
        |chain: &mut ChainView| &mut chain.cinemas,
        c.cinema_id,
        c.version,
    ));
    docs.extend(cinema_copies(related, c.cinema_id, c.version, Some(card)));
    docs
}

fn project_room(r: &RoomSaved, own: Option<&Doc>, related: &Related<'_>) -> Vec<Doc> {
    let disabled = r
        .disabled
        .len()
        .min(usize::from(r.rows) * usize::from(r.seats_per_row));
    let view = RoomView {
        id: r.room_id,
        version: r.version,
        cinema_id: r.cinema_id,
        name: r.name.clone(),
        rows: r.rows,
        seats_per_row: r.seats_per_row,
        disabled: sorted(&r.disabled),
        accessible: sorted(&r.accessible),
        capacity: (u32::from(r.rows) * u32::from(r.seats_per_row))
            .saturating_sub(u32::try_from(disabled).unwrap_or(u32::MAX)),
    };
    let mut docs = vec![view.clone().into_doc()];
    docs.extend(related.patch_one::<CinemaView>(r.cinema_id, |cinema| {
        upsert(&mut cinema.rooms, view.clone(), by_name_room)
    }));
    docs.extend(leave_old_parent(
        related,
        own,
        Key::Cinema,
        r.cinema_id,
        |cinema: &mut CinemaView| &mut cinema.rooms,
        r.room_id,
        r.version,
    ));
    docs.extend(room_copies(related, r.room_id, r.version, Some(&view)));
    docs
}

fn project_movie(m: &MovieSaved, related: &Related<'_>) -> Vec<Doc> {
    let showtimes = gathered(related, Key::Movie, m.movie_id, showtime_card, by_start);
    let view = MovieView {
        id: m.movie_id,
        version: m.version,
        title: m.title.clone(),
        synopsis: m.synopsis.clone(),
        duration_min: m.duration_min,
        classification: m.classification.clone(),
        genres: m.genres.clone(),
        showtimes,
    };
    let reference = movie_ref(&view);
    let mut docs = vec![view.into_doc()];
    docs.extend(movie_copies(
        related,
        m.movie_id,
        m.version,
        Some(reference),
    ));
    docs
}

fn project_showtime(s: &ShowtimeSaved, own: Option<&Doc>, related: &Related<'_>) -> Vec<Doc> {
    let room = related.view::<RoomView>(s.room_id);
    let view = ShowtimeView {
        id: s.showtime_id,
        version: s.version,
        movie_id: s.movie_id,
        room_id: s.room_id,
        cinema_id: s.cinema_id,
        chain_id: s.chain_id,
        starts_at: s.starts_at,
        ends_at: s.ends_at,
        status: s.status.clone(),
        prices: s.prices.clone(),
        currency: s.currency.clone(),
        movie: related.view::<MovieView>(s.movie_id).map(|m| movie_ref(&m)),
        room: room.as_ref().map(room_ref),
        cinema: related
            .view::<CinemaView>(s.cinema_id)
            .map(|c| cinema_card(&c)),
        chain: related.view::<ChainView>(s.chain_id).map(|c| chain_ref(&c)),
    };
    let card = showtime_card(&view);
    let mut docs = vec![view.clone().into_doc()];
    docs.extend(related.patch_one::<MovieView>(s.movie_id, |movie| {
        upsert(&mut movie.showtimes, card.clone(), by_start)
    }));
    docs.extend(leave_old_parent(
        related,
        own,
        Key::Movie,
        s.movie_id,
        |movie: &mut MovieView| &mut movie.showtimes,
        s.showtime_id,
        s.version,
    ));
    let mut seats = related
        .view::<SeatMapView>(s.showtime_id)
        .unwrap_or_else(|| SeatMapView {
            showtime_id: s.showtime_id,
            version: 0,
            sold: Vec::new(),
            showtime: None,
            room: None,
        });
    let seats_before = related
        .has(Kind::SeatMap, s.showtime_id)
        .then(|| seats.clone());
    put(&mut seats.showtime, showtime_ref(&view));
    if let Some(room) = room {
        put(&mut seats.room, room);
    }
    if seats_before.as_ref() != Some(&seats) {
        docs.push(seats.into_doc());
    }
    docs.extend(
        related.patch::<PurchaseView>(Key::Showtime, s.showtime_id, |purchase| {
            put(&mut purchase.showtime, view.clone())
        }),
    );
    docs
}

fn project_deletion(kind: Kind, d: &Deleted, own: Option<&Doc>, related: &Related<'_>) -> Vec<Doc> {
    let mut docs = vec![Doc::tombstone(kind, d.id, d.version)];
    match kind {
        Kind::Chain => docs.extend(chain_copies(related, d.id, d.version, None)),
        Kind::Cinema => {
            docs.extend(leave_old_parent(
                related,
                own,
                Key::Chain,
                Uuid::nil(),
                |chain: &mut ChainView| &mut chain.cinemas,
                d.id,
                d.version,
            ));
            docs.extend(cinema_copies(related, d.id, d.version, None));
        }
        Kind::Room => {
            docs.extend(leave_old_parent(
                related,
                own,
                Key::Cinema,
                Uuid::nil(),
                |cinema: &mut CinemaView| &mut cinema.rooms,
                d.id,
                d.version,
            ));
            docs.extend(room_copies(related, d.id, d.version, None));
        }
        Kind::Movie => docs.extend(movie_copies(related, d.id, d.version, None)),
        Kind::Showtime | Kind::SeatMap | Kind::Purchase => {}
    }
    docs
}

/// A purchase event: merge it into the purchase and move the seat map on.
fn project_purchase(
    own: Option<&Doc>,
    related: &Related<'_>,
    showtime_id: Uuid,
    seat_map: &SeatMapState,
    merge: impl FnOnce(&mut PurchaseView),
    purchase_id: Uuid,
) -> Vec<Doc> {
    let mut view = purchase_of(own, purchase_id, Uuid::nil());
    view.showtime_id = Some(showtime_id);
    merge(&mut view);
    if let Some(showtime) = related.view::<ShowtimeView>(showtime_id) {
        put(&mut view.showtime, showtime);
    }
    let mut docs: Vec<Doc> = changed_doc(own, view).into_iter().collect();
    let stored = related.view::<SeatMapView>(showtime_id);
    if stored
        .as_ref()
        .is_none_or(|seats| seats.version < seat_map.version)
    {
        let mut seats = stored.unwrap_or_else(|| SeatMapView {
            showtime_id,
            version: 0,
            sold: Vec::new(),
            showtime: None,
            room: None,
        });
        seats.version = seat_map.version;
        seats.sold = sorted(&seat_map.sold);
        docs.push(seats.into_doc());
    }
    docs
}

/// The stored purchase, or a new one.
fn purchase_of(own: Option<&Doc>, id: Uuid, customer_id: Uuid) -> PurchaseView {
    own.and_then(Doc::view).unwrap_or(PurchaseView {
        id,
        customer_id,
        showtime_id: None,
        status: None,
        tickets: Vec::new(),
        total_cents: 0,
        currency: String::new(),
        purchased_at: None,
        refunded_at: None,
        tickets_pdf_ready: false,
        showtime: None,
    })
}

/// The document of `view` if it differs from `own`.
fn changed_doc<V: View>(own: Option<&Doc>, view: V) -> Option<Doc> {
    let doc = view.into_doc();
    // Bodies, not whole rows: a timestamp column read back from PostgreSQL
    // has lost its nanoseconds, the JSON has not.
    let same = own.is_some_and(|own| own.version == doc.version && own.body == doc.body);
    (!same).then_some(doc)
}

fn sorted(seats: &[String]) -> Vec<String> {
    let mut seats = seats.to_vec();
    seats.sort_by_key(|seat| seat_order(seat));
    seats.dedup();
    seats
}

/// `B10` sorts after `B9`: by row letters, then seat number.
pub fn seat_order(label: &str) -> (String, u32, String) {
    let split = label
        .find(|c: char| c.is_ascii_digit())
        .unwrap_or(label.len());
    let (row, number) = label.split_at(split);
    (
        row.to_owned(),
        number.parse().unwrap_or(u32::MAX),
        label.to_owned(),
    )
}
