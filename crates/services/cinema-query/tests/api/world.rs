//! A small cinema world told as the events the command side would publish
//! (the `contracts` types), and what its final state must look like in the
//! read models.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Duration, DurationRound, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;
use zocalo_cinema_query::documents::{
    ChainView, CinemaView, Doc, Kind, MovieView, PurchaseView, SeatMapView, ShowtimeView,
};
use zocalo_cinema_query::projector::{Incoming, Projector};
use zocalo_cinema_query::store::CinemaStore;
use zocalo_contracts::cinema::*;

/// One published event.
#[derive(Debug, Clone)]
pub struct Told {
    pub id: Uuid,
    pub kind: &'static str,
    pub payload: Value,
    pub occurred_at: DateTime<Utc>,
}

#[derive(Default)]
pub struct World {
    pub events: Vec<Told>,
    pub chain_a: Uuid,
    pub chain_b: Uuid,
    pub chain_gone: Uuid,
    pub cinema_1: Uuid,
    pub cinema_2: Uuid,
    pub cinema_3: Uuid,
    pub room_1: Uuid,
    pub room_2: Uuid,
    pub room_3: Uuid,
    pub room_4: Uuid,
    pub movie_1: Uuid,
    pub movie_2: Uuid,
    pub movie_gone: Uuid,
    pub showtimes: Vec<Uuid>,
    pub customer_x: Uuid,
    pub customer_y: Uuid,
    pub purchase_1: Uuid,
    pub purchase_2: Uuid,
    pub purchase_3: Uuid,
}

fn id() -> Uuid {
    Uuid::now_v7()
}

impl World {
    fn tell(&mut self, kind: &'static str, payload: impl Serialize) {
        self.events.push(Told {
            id: id(),
            kind,
            payload: serde_json::to_value(payload).unwrap(),
            occurred_at: Utc::now(),
        });
    }

    /// Chains A and B (A renamed), a chain created then deleted; three
    /// cinemas (one renamed), four rooms (one renamed), three movies (one
    /// retitled, one deleted), five showtimes (one cancelled), three
    /// purchases (one refunded, one with its PDF ready).
    pub fn new() -> Self {
        let mut w = World {
            chain_a: id(),
            chain_b: id(),
            chain_gone: id(),
            cinema_1: id(),
            cinema_2: id(),
            cinema_3: id(),
            room_1: id(),
            room_2: id(),
            room_3: id(),
            room_4: id(),
            movie_1: id(),
            movie_2: id(),
            movie_gone: id(),
            customer_x: id(),
            customer_y: id(),
            purchase_1: id(),
            purchase_2: id(),
            purchase_3: id(),
            ..World::default()
        };
        let chain = |chain_id, version, name: &str| ChainSaved {
            chain_id,
            version,
            name: name.into(),
            description: format!("{name} cinemas"),
        };
        w.tell(CHAIN_SAVED, chain(w.chain_a, 1, "Cinemex"));
        w.tell(CHAIN_SAVED, chain(w.chain_b, 1, "Cinépolis"));
        w.tell(CHAIN_SAVED, chain(w.chain_gone, 1, "Gone"));
        w.tell(CHAIN_SAVED, chain(w.chain_a, 2, "Cinemex Platino"));
        w.tell(
            CHAIN_DELETED,
            Deleted {
                id: w.chain_gone,
                version: 2,
            },
        );
        let cinema = |cinema_id, chain_id, version, name: &str, city: &str| CinemaSaved {
            cinema_id,
            chain_id,
            version,
            name: name.into(),
            city: city.into(),
            address: format!("Av. {name} 1"),
            manager_ids: vec![],
        };
        w.tell(
            CINEMA_SAVED,
            cinema(w.cinema_1, w.chain_a, 1, "Reforma", "Ciudad de México"),
        );
        w.tell(
            CINEMA_SAVED,
            cinema(w.cinema_2, w.chain_a, 1, "Chapultepec", "Guadalajara"),
        );
        w.tell(
            CINEMA_SAVED,
            cinema(w.cinema_3, w.chain_b, 1, "Coyoacán", "Ciudad de México"),
        );
        w.tell(
            CINEMA_SAVED,
            cinema(
                w.cinema_3,
                w.chain_b,
                2,
                "Coyoacán Centro",
                "Ciudad de México",
            ),
        );
        let room = |room_id, cinema_id, version, name: &str, rows, seats_per_row| RoomSaved {
            room_id,
            cinema_id,
            version,
            name: name.into(),
            rows,
            seats_per_row,
            disabled: vec!["A1".into()],
            accessible: vec!["A2".into()],
        };
        w.tell(ROOM_SAVED, room(w.room_1, w.cinema_1, 1, "Sala 1", 5, 8));
        w.tell(ROOM_SAVED, room(w.room_2, w.cinema_1, 1, "Sala 2", 4, 6));
        w.tell(ROOM_SAVED, room(w.room_3, w.cinema_2, 1, "Sala A", 3, 5));
        w.tell(ROOM_SAVED, room(w.room_4, w.cinema_3, 1, "Sala VIP", 4, 4));
        w.tell(
            ROOM_SAVED,
            room(w.room_2, w.cinema_1, 2, "Sala 2 IMAX", 4, 6),
        );
        let movie = |movie_id, version, title: &str| MovieSaved {
            movie_id,
            version,
            title: title.into(),
            synopsis: format!("About {title}"),
            duration_min: 110,
            classification: "B".into(),
            genres: vec!["drama".into()],
        };
        w.tell(MOVIE_SAVED, movie(w.movie_1, 1, "Roma"));
        w.tell(MOVIE_SAVED, movie(w.movie_2, 1, "Amores perros"));
        w.tell(MOVIE_SAVED, movie(w.movie_gone, 1, "Withdrawn"));
        w.tell(MOVIE_SAVED, movie(w.movie_1, 2, "Roma (remastered)"));
        // Whole seconds: PostgreSQL keeps microseconds, JSON keeps all.
        let tomorrow = Utc::now().duration_trunc(Duration::seconds(1)).unwrap() + Duration::days(1);
        let plan = [
            (w.movie_1, w.room_1, w.cinema_1, w.chain_a, 0),
            (w.movie_1, w.room_3, w.cinema_2, w.chain_a, 1),
            (w.movie_2, w.room_4, w.cinema_3, w.chain_b, 0),
            (w.movie_2, w.room_2, w.cinema_1, w.chain_a, 2),
            (w.movie_gone, w.room_2, w.cinema_1, w.chain_a, 0),
        ];
        for (movie_id, room_id, cinema_id, chain_id, day) in plan {
            let showtime_id = id();
            w.showtimes.push(showtime_id);
            let starts_at = tomorrow + Duration::days(day);
            w.tell(
                SHOWTIME_SAVED,
                showtime(
                    showtime_id,
                    1,
                    movie_id,
                    room_id,
                    cinema_id,
                    chain_id,
                    starts_at,
                    SCHEDULED,
                ),
            );
        }
        let cancelled = w.showtimes[2];
        w.tell(
            SHOWTIME_SAVED,
            showtime(
                cancelled, 2, w.movie_2, w.room_4, w.cinema_3, w.chain_b, tomorrow, CANCELLED,
            ),
        );
        w.tell(
            MOVIE_DELETED,
            Deleted {
                id: w.movie_gone,
                version: 2,
            },
        );
        let hot = w.showtimes[0];
        w.tell(
            PURCHASE_COMPLETED,
            purchase(
                w.purchase_1,
                hot,
                w.customer_x,
                &["B1", "B2"],
                1,
                &["B1", "B2"],
            ),
        );
        w.tell(
            PURCHASE_COMPLETED,
            purchase(
                w.purchase_2,
                hot,
                w.customer_y,
                &["C3"],
                2,
                &["B1", "B2", "C3"],
            ),
        );
        w.tell(
            PURCHASE_REFUNDED,
            PurchaseRefunded {
                purchase_id: w.purchase_1,
                showtime_id: hot,
                customer_id: w.customer_x,
                at: Utc::now(),
                seat_map: SeatMapState {
                    version: 3,
                    sold: vec!["C3".into()],
                },
            },
        );
        w.tell(
            TICKETS_DOCUMENT_READY,
            TicketsDocumentReady {
                purchase_id: w.purchase_2,
                customer_id: w.customer_y,
                object_key: format!("tickets/{}.pdf", w.purchase_2),
            },
        );
        w.tell(
            PURCHASE_COMPLETED,
            purchase(
                w.purchase_3,
                w.showtimes[3],
                w.customer_x,
                &["D6"],
                1,
                &["D6"],
            ),
        );
        // A kind the read models do not show.
        w.tell("showtime.reminded", serde_json::json!({"showtime_id": hot}));
        w
    }

    /// Check every fact the events describe against the read models.
    pub async fn assert_described_by(&self, store: &dyn CinemaStore) {
        let get = |kind, id| async move { store.document(kind, id).await.unwrap() };
        let chain: ChainView = view(get(Kind::Chain, self.chain_a).await);
        assert_eq!(chain.name, "Cinemex Platino");
        assert_eq!(
            ids(chain.cinemas.iter().map(|c| c.id)),
            ids([self.cinema_1, self.cinema_2])
        );
        let chain_b: ChainView = view(get(Kind::Chain, self.chain_b).await);
        assert_eq!(chain_b.cinemas.len(), 1);
        assert_eq!(chain_b.cinemas[0].name, "Coyoacán Centro");
        assert!(
            get(Kind::Chain, self.chain_gone).await.is_none(),
            "deleted chain"
        );

        let cinema: CinemaView = view(get(Kind::Cinema, self.cinema_1).await);
        assert_eq!(cinema.chain.as_ref().unwrap().name, "Cinemex Platino");
        let rooms: Vec<_> = cinema.rooms.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(rooms, ["Sala 1", "Sala 2 IMAX"]);
        assert_eq!(cinema.rooms[0].capacity, 39, "5×8 less one disabled seat");

        let movie: MovieView = view(get(Kind::Movie, self.movie_1).await);
        assert_eq!(movie.title, "Roma (remastered)");
        assert_eq!(
            ids(movie.showtimes.iter().map(|s| s.id)),
            ids([self.showtimes[0], self.showtimes[1]])
        );
        assert!(get(Kind::Movie, self.movie_gone).await.is_none());

        let first: ShowtimeView = view(get(Kind::Showtime, self.showtimes[0]).await);
        assert_eq!(first.movie.as_ref().unwrap().title, "Roma (remastered)");
        assert_eq!(first.chain.as_ref().unwrap().name, "Cinemex Platino");
        assert_eq!(first.room.as_ref().unwrap().name, "Sala 1");
        let cancelled: ShowtimeView = view(get(Kind::Showtime, self.showtimes[2]).await);
        assert_eq!(cancelled.status, CANCELLED);
        assert_eq!(cancelled.cinema.as_ref().unwrap().name, "Coyoacán Centro");
        let imax: ShowtimeView = view(get(Kind::Showtime, self.showtimes[3]).await);
        assert_eq!(imax.room.as_ref().unwrap().name, "Sala 2 IMAX");
        let orphan: ShowtimeView = view(get(Kind::Showtime, self.showtimes[4]).await);
        assert!(
            orphan.movie.is_none(),
            "the deleted movie is no longer shown"
        );

        let seats: SeatMapView = view(get(Kind::SeatMap, self.showtimes[0]).await);
        assert_eq!(seats.version, 3);
        assert_eq!(seats.sold, ["C3"]);
        assert_eq!(seats.room.as_ref().unwrap().rows, 5);
        let untouched: SeatMapView = view(get(Kind::SeatMap, self.showtimes[1]).await);
        assert_eq!((untouched.version, untouched.sold.len()), (0, 0));

        let refunded: PurchaseView = view(get(Kind::Purchase, self.purchase_1).await);
        assert_eq!(refunded.status.as_deref(), Some("refunded"));
        assert_eq!(refunded.tickets.len(), 2);
        let shown = refunded.showtime.as_ref().unwrap();
        assert_eq!(shown.movie.as_ref().unwrap().title, "Roma (remastered)");
        assert_eq!(shown.chain.as_ref().unwrap().name, "Cinemex Platino");
        let second: PurchaseView = view(get(Kind::Purchase, self.purchase_2).await);
        assert_eq!(second.status.as_deref(), Some("completed"));
        assert!(second.tickets_pdf_ready);
        let third: PurchaseView = view(get(Kind::Purchase, self.purchase_3).await);
        assert_eq!(
            third.showtime.as_ref().unwrap().room.as_ref().unwrap().name,
            "Sala 2 IMAX"
        );
    }
}

#[allow(clippy::too_many_arguments)]
pub fn showtime(
    showtime_id: Uuid,
    version: i64,
    movie_id: Uuid,
    room_id: Uuid,
    cinema_id: Uuid,
    chain_id: Uuid,
    starts_at: DateTime<Utc>,
    status: &str,
) -> ShowtimeSaved {
    ShowtimeSaved {
        showtime_id,
        version,
        movie_id,
        room_id,
        cinema_id,
        chain_id,
        starts_at,
        ends_at: starts_at + Duration::minutes(130),
        prices: vec![
            SeatPrice {
                class: STANDARD.into(),
                cents: 9_000,
            },
            SeatPrice {
                class: ACCESSIBLE.into(),
                cents: 6_000,
            },
        ],
        currency: "MXN".into(),
        status: status.into(),
    }
}

pub fn purchase(
    purchase_id: Uuid,
    showtime_id: Uuid,
    customer_id: Uuid,
    seats: &[&str],
    seat_map_version: i64,
    sold: &[&str],
) -> PurchaseCompleted {
    PurchaseCompleted {
        purchase_id,
        showtime_id,
        customer_id,
        tickets: seats
            .iter()
            .map(|seat| Ticket {
                ticket_id: Uuid::now_v7(),
                seat: (*seat).into(),
                class: STANDARD.into(),
                price_cents: 9_000,
                code: format!("CODE-{seat}"),
            })
            .collect(),
        total_cents: 9_000 * seats.len() as i64,
        currency: "MXN".into(),
        at: Utc::now(),
        seat_map: SeatMapState {
            version: seat_map_version,
            sold: sold.iter().map(|s| (*s).into()).collect(),
        },
    }
}

fn view<T: serde::de::DeserializeOwned>(doc: Option<Doc>) -> T {
    doc.expect("document present")
        .view()
        .expect("document readable")
}

fn ids(ids: impl IntoIterator<Item = Uuid>) -> BTreeSet<Uuid> {
    ids.into_iter().collect()
}

/// Apply events straight to a store, as the projector does.
pub async fn apply_all(store: &Arc<dyn CinemaStore>, events: &[Told]) {
    let projector = Projector::new(store.clone());
    for event in events {
        projector.apply(incoming(event)).await.unwrap();
    }
}

pub fn incoming(event: &Told) -> Incoming<'_> {
    Incoming {
        id: event.id,
        kind: event.kind,
        payload: &event.payload,
        occurred_at: event.occurred_at,
        seq: None,
    }
}
