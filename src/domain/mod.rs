//! Pure logic: no actix, no IO. Tested table-driven in milliseconds.

/// An enum of names the API, the metrics and the database share: each variant's
/// spelling is its name in snake_case, derived once for serde and strum (`FromStr`,
/// `Display`, `as_str`), with `ALL` variants and their `NAMES` in declaration order.
/// Extra derives and docs go before `pub enum`.
macro_rules! spelled_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident $(= $rank:literal)?,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[derive(strum::EnumString, strum::IntoStaticStr, strum::Display, strum::VariantArray, strum::VariantNames)]
        #[serde(rename_all = "snake_case")]
        #[strum(serialize_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant $(= $rank)?,)*
        }

        impl $name {
            pub const ALL: &'static [$name] = <Self as strum::VariantArray>::VARIANTS;
            pub const NAMES: &'static [&'static str] = <Self as strum::VariantNames>::VARIANTS;

            pub fn as_str(self) -> &'static str {
                self.into()
            }
        }
    };
}

pub mod allow;
pub mod argv;
pub mod chunking;
pub mod credentials;
pub mod events;
pub mod finished;
pub mod graph;
pub mod health;
pub mod ladder;
pub mod lavfi;
pub mod limits;
pub mod media;
pub mod node;
pub mod packaging;
pub mod params;
pub mod placement;
pub mod progress;
pub mod queue;
pub mod redact;
pub mod state;
pub mod step_params;
pub mod templates;
