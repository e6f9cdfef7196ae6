//! The console's page frame and the small pieces every page uses (status badges,
//! progress cells, sizes and ages), as maud markup. No inline script or style: the
//! Content-Security-Policy forbids both; `app.js` and `app.css` do the rest.

use super::Viewer;
use crate::wire::ProgressDetail;
use maud::{DOCTYPE, Markup, html};

const NAV: &[(&str, &str, &str)] = &[
    ("overview", "/ui", "Overview"),
    ("jobs", "/ui/jobs", "Jobs"),
    ("submit", "/ui/submit", "Submit"),
    ("nodes", "/ui/nodes", "Nodes"),
    ("webhooks", "/ui/webhooks", "Webhooks"),
];

/// Pages only admins have (read-only keys may not read webhooks or submit).
fn admin_only(page: &str) -> bool {
    matches!(page, "submit" | "webhooks")
}

/// What every page's `<head>` has: its title, the viewport for phones, the stylesheet,
/// and an empty icon (so the browser asks for no `/favicon.ico`).
fn head_common(title: &str) -> Markup {
    html! {
        meta charset="utf-8";
        meta name="viewport" content="width=device-width, initial-scale=1";
        title { (title) " · ffrtmp" }
        link rel="icon" href="data:,";
        link rel="stylesheet" href="/ui/assets/app.css";
    }
}

pub fn layout(title: &str, page: &str, viewer: &Viewer, main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                (head_common(title))
                meta name="csrf-token" content=(viewer.csrf);
                script src="/ui/assets/app.js" defer {}
            }
            body data-page=(page) data-role=(viewer.role.as_str()) {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    span.brand { "ffrtmp" }
                    nav aria-label="Main" {
                        ul {
                            @for (id, href, label) in NAV {
                                @if viewer.can_control() || !admin_only(id) {
                                    li { a href=(href) aria-current=[(*id == page).then_some("page")] { (label) } }
                                }
                            }
                        }
                    }
                    span.who { (viewer.role.as_str()) }
                    @if viewer.signed_in {
                        form.signout method="post" action="/ui/logout" {
                            input type="hidden" name="csrf" value=(viewer.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main #main tabindex="-1" { (main) }
                div #toast role="status" aria-live="polite" {}
            }
        }
    }
}

fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { (head_common(title)) }
            body.bare { main #main { (body) } }
        }
    }
}

pub fn login(next: &str, error: Option<&str>) -> Markup {
    bare(
        "Sign in",
        html! {
            h1 { "ffrtmp console" }
            form.card.login method="post" action="/ui/login" {
                @if let Some(e) = error { p.error role="alert" { (e) } }
                label for="key" { "API key" }
                input #key type="password" name="key" autocomplete="current-password" required maxlength="512" autofocus;
                input type="hidden" name="next" value=(next);
                button type="submit" { "Sign in" }
                p.hint { "An admin key may control jobs and nodes; a read-only key may look." }
            }
        },
    )
}

pub fn error_page(status: u16, message: &str) -> Markup {
    bare(
        "Error",
        html! {
            h1 { (status) }
            p.error role="alert" { (message) }
            p { a href="/ui" { "Back to the console" } }
        },
    )
}

pub fn badge(status: &str) -> Markup {
    html! { span.badge data-status=(status) { (status) } }
}

/// A progress bar with its figures: fixed-width, so live updates shift nothing.
pub fn progress_cell(job_id: &str, percent: f64, detail: Option<&ProgressDetail>) -> Markup {
    let p = percent.clamp(0.0, 100.0);
    html! {
        div.prog data-job-id=(job_id) {
            progress max="100" value=(format!("{p:.1}")) aria-label="Progress" {}
            span.pct { (format!("{p:.0} %")) }
            span.rate { (rate_text(detail)) }
        }
    }
}

/// "24 fps · 1.5× · ETA 12 s", as the live script writes it too.
pub fn rate_text(d: Option<&ProgressDetail>) -> String {
    let Some(d) = d else { return String::new() };
    let mut parts = Vec::new();
    if let Some(f) = d.fps {
        parts.push(format!("{f:.0} fps"));
    }
    if let Some(s) = d.speed {
        parts.push(format!("{s:.2}×"));
    }
    if let Some(e) = d.eta_seconds {
        parts.push(format!("ETA {}", duration(e)));
    }
    parts.join(" · ")
}

pub fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

/// "2026-12-04 02:06:40 UTC" from an RFC 3339 time (unparseable text as it is).
pub fn short_time(at: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(at)
        .map(|t| t.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|_| at.to_string())
}

/// An RFC 3339 time as a `<time>` the script turns into "12 s ago".
pub fn ago(at: &str) -> Markup {
    let secs = chrono::DateTime::parse_from_rfc3339(at)
        .map(|t| (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_milliseconds() as f64 / 1000.0)
        .unwrap_or(0.0);
    html! { time.ago datetime=(at) title=(at) { (duration(secs)) " ago" } }
}

/// A horizontal bar chart in SVG (presentation attributes only, so the CSP holds).
pub fn bar_chart(label: &str, rows: &[(String, i64)]) -> Markup {
    let max = rows.iter().map(|r| r.1).max().unwrap_or(0).max(1) as f64;
    let h = 22 * rows.len().max(1);
    html! {
        svg.chart role="img" aria-label=(label) viewBox=(format!("0 0 300 {h}")) preserveAspectRatio="xMinYMin meet" {
            @for (i, (name, n)) in rows.iter().enumerate() {
                @let y = i * 22;
                text x="0" y=(y + 15) { (name) }
                rect x="110" y=(y + 4) height="14" width=(format!("{:.1}", 150.0 * *n as f64 / max)) class=(format!("bar s-{name}")) {}
                text x=(format!("{:.1}", 115.0 + 150.0 * *n as f64 / max)) y=(y + 15) { (n) }
            }
        }
    }
}

/// Vertical bars over time (oldest left), e.g. jobs finished per five minutes.
pub fn column_chart(label: &str, values: &[(i64, i64)]) -> Markup {
    let max = values.iter().map(|(a, b)| a + b).max().unwrap_or(0).max(1) as f64;
    let w = 300.0 / values.len().max(1) as f64;
    html! {
        svg.chart role="img" aria-label=(label) viewBox="0 0 300 80" preserveAspectRatio="none" {
            @for (i, (ok, bad)) in values.iter().enumerate() {
                @let h_ok = 76.0 * *ok as f64 / max;
                @let h_bad = 76.0 * *bad as f64 / max;
                rect.ok x=(format!("{:.1}", i as f64 * w + 1.0)) y=(format!("{:.1}", 78.0 - h_ok)) width=(format!("{:.1}", w - 2.0)) height=(format!("{h_ok:.1}")) {}
                rect.bad x=(format!("{:.1}", i as f64 * w + 1.0)) y=(format!("{:.1}", 78.0 - h_ok - h_bad)) width=(format!("{:.1}", w - 2.0)) height=(format!("{h_bad:.1}")) {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_as_operators_write_them() {
        assert_eq!(duration(9.4), "9 s");
        assert_eq!(duration(75.0), "1 min 15 s");
        assert_eq!(duration(7300.0), "2 h 1 min");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 << 30), "5.0 GiB");
        let d = ProgressDetail {
            percent: 50.0,
            fps: Some(24.4),
            speed: Some(1.5),
            eta_seconds: Some(12.0),
            ..Default::default()
        };
        assert_eq!(rate_text(Some(&d)), "24 fps · 1.50× · ETA 12 s");
        assert_eq!(rate_text(None), "");
        assert_eq!(short_time("2026-12-04T02:06:40.121706Z"), "2026-12-04 02:06:40 UTC");
        assert_eq!(short_time("soon"), "soon");
    }

    #[test]
    fn pages_escape_what_they_show() {
        let m = error_page(404, "<script>alert(1)</script>").into_string();
        assert!(m.contains("&lt;script&gt;") && !m.contains("<script>alert"), "{m}");
    }
}
