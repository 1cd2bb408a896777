//! The applications the site links to: the navigation bar and the home
//! page are built from this list, so a new application (cinema, video
//! tasks) appears everywhere by adding one entry and its routes module.

pub struct App {
    /// Marks the application's pages in the navigation (`Chrome::section`).
    pub section: &'static str,
    pub name: &'static str,
    pub href: &'static str,
    pub blurb: &'static str,
}

pub const APPS: &[App] = &[
    App {
        section: "reviews",
        name: "Reviews",
        href: "/reviews",
        blurb: "Camera and lens reviews by our editors, with specs and side-by-side comparisons.",
    },
    App {
        section: "books",
        name: "Books",
        href: "/books",
        blurb: "A second-hand book store: find a book, buy it, or sell your own.",
    },
    App {
        section: "cinema",
        name: "Cinema",
        href: "/cinema",
        blurb: "Movies now showing: pick a showtime, choose your seats and get your tickets.",
    },
    App {
        section: "videos",
        name: "Videos",
        href: "/videos",
        blurb: "Upload a video clip and get it back processed, ready to play or download.",
    },
];
