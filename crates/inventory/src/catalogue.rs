//! The item catalogue: which items exist, whether each is stackable or unique, and how many of it
//! one player may hold. Loaded once at start-up from a TOML file:
//!
//! ```toml
//! [[item]]
//! id = "gold"
//! name = "Gold coin"
//! max_stack = 1000000      # optional, default DEFAULT_MAX_STACK
//!
//! [[item]]
//! id = "sword_of_dawn"
//! name = "Sword of Dawn"
//! unique = true            # held at most once per player
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::InventoryError;

/// `max_stack` of a stackable item that names none.
pub const DEFAULT_MAX_STACK: u64 = 1_000_000;
/// Largest `max_stack` a catalogue may set: far below `i64::MAX`, so sums of holdings stay exact.
pub const MAX_STACK_LIMIT: u64 = 1_000_000_000_000;
/// Longest item id, in bytes.
pub const ITEM_ID_MAX_BYTES: usize = 64;

/// One item kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemDef {
    /// Stable id: `a-z`, `0-9`, `_`, `-`, `.`, at most [`ITEM_ID_MAX_BYTES`] bytes.
    pub item_id: String,
    /// Display name.
    pub name: String,
    /// A unique item is held at most once per player; its `max_stack` is 1.
    pub unique: bool,
    /// Most of this item one player may hold.
    pub max_stack: u64,
}

/// Every item kind the server knows, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalogue {
    items: BTreeMap<String, ItemDef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    item: Vec<FileItem>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileItem {
    id: String,
    name: String,
    #[serde(default)]
    unique: bool,
    max_stack: Option<u64>,
}

impl Catalogue {
    /// Reads a catalogue file.
    ///
    /// # Errors
    /// [`InventoryError::Catalogue`] when the file cannot be read or breaks a rule of
    /// [`Catalogue::from_toml`].
    pub fn load(path: &Path) -> Result<Catalogue, InventoryError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| InventoryError::Catalogue(format!("{}: {e}", path.display())))?;
        Catalogue::from_toml(&text).map_err(|e| match e {
            InventoryError::Catalogue(message) => {
                InventoryError::Catalogue(format!("{}: {message}", path.display()))
            }
            other => other,
        })
    }

    /// Parses a catalogue: `[[item]]` tables with `id`, `name`, optional `unique` (default false)
    /// and optional `max_stack` (default [`DEFAULT_MAX_STACK`]; 1 for unique items).
    ///
    /// # Errors
    /// [`InventoryError::Catalogue`] for invalid TOML, unknown keys, a malformed or duplicate id,
    /// an empty name, `max_stack` outside `1..=MAX_STACK_LIMIT`, or a unique item with
    /// `max_stack` other than 1.
    pub fn from_toml(text: &str) -> Result<Catalogue, InventoryError> {
        let fail = |message: String| Err(InventoryError::Catalogue(message));
        let file: File = toml::from_str(text).map_err(|e| InventoryError::Catalogue(e.to_string()))?;
        let mut items = BTreeMap::new();
        for item in file.item {
            if !valid_item_id(&item.id) {
                return fail(format!(
                    "item id {:?} must be 1 to {ITEM_ID_MAX_BYTES} bytes of a-z, 0-9, _, - and .",
                    item.id
                ));
            }
            if item.name.trim().is_empty() {
                return fail(format!("item {} needs a name", item.id));
            }
            let max_stack = match (item.unique, item.max_stack) {
                (true, None | Some(1)) => 1,
                (true, Some(_)) => return fail(format!("unique item {} must have max_stack 1", item.id)),
                (false, None) => DEFAULT_MAX_STACK,
                (false, Some(n)) if (1..=MAX_STACK_LIMIT).contains(&n) => n,
                (false, Some(_)) => {
                    return fail(format!("max_stack of {} must be within 1..={MAX_STACK_LIMIT}", item.id));
                }
            };
            let def = ItemDef { item_id: item.id.clone(), name: item.name, unique: item.unique, max_stack };
            if items.insert(item.id.clone(), def).is_some() {
                return fail(format!("item id {} appears twice", item.id));
            }
        }
        Ok(Catalogue { items })
    }

    /// The item with this id, if the catalogue has it.
    pub fn get(&self, item_id: &str) -> Option<&ItemDef> {
        self.items.get(item_id)
    }

    /// Every item, sorted by id.
    pub fn items(&self) -> impl Iterator<Item = &ItemDef> {
        self.items.values()
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the catalogue has no items (then every grant is refused).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

fn valid_item_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= ITEM_ID_MAX_BYTES
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_catalogue_file_is_parsed_with_defaults() {
        let catalogue = Catalogue::from_toml(
            "[[item]]\nid = \"gold\"\nname = \"Gold\"\n\n[[item]]\nid = \"sword\"\nname = \"Sword\"\nunique = true\n\n\
             [[item]]\nid = \"potion\"\nname = \"Potion\"\nmax_stack = 20\n",
        )
        .unwrap_or_default();
        assert_eq!(catalogue.len(), 3);
        assert_eq!(catalogue.get("gold").map(|d| (d.unique, d.max_stack)), Some((false, DEFAULT_MAX_STACK)));
        assert_eq!(catalogue.get("sword").map(|d| (d.unique, d.max_stack)), Some((true, 1)));
        assert_eq!(catalogue.get("potion").map(|d| d.max_stack), Some(20));
        let ids: Vec<&str> = catalogue.items().map(|d| d.item_id.as_str()).collect();
        assert_eq!(ids, ["gold", "potion", "sword"]);
        assert!(Catalogue::from_toml("").is_ok_and(|c| c.is_empty()));
    }

    #[test]
    fn broken_catalogues_are_refused() {
        let check = |text: &str| {
            assert!(matches!(Catalogue::from_toml(text), Err(InventoryError::Catalogue(_))), "{text}");
        };
        check("[[item]]\nid = \"Gold\"\nname = \"x\"");
        check("[[item]]\nid = \"\"\nname = \"x\"");
        check("[[item]]\nid = \"gold\"\nname = \" \"");
        check("[[item]]\nid = \"gold\"\nname = \"x\"\nmax_stack = 0");
        check("[[item]]\nid = \"gold\"\nname = \"x\"\nmax_stack = 1000000000001");
        check("[[item]]\nid = \"sword\"\nname = \"x\"\nunique = true\nmax_stack = 2");
        check("[[item]]\nid = \"gold\"\nname = \"x\"\n[[item]]\nid = \"gold\"\nname = \"y\"");
        check("[[item]]\nid = \"gold\"\nname = \"x\"\ncolour = \"red\"");
        check("not toml at all [");
    }
}
