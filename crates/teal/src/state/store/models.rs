//! Each model's slots and route, remembered so a restart brings back the same slots with the
//! same one live; and a hand-made change of them, written with its audit event.

use rusqlite::{Transaction, params};

use super::audit::append_in;
use super::{Event, NewEvent, Store, StoreError};

/// A model's slots and route as remembered across restarts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelState {
    pub model: String,
    pub active: String,
    pub weight: u32,
    pub shadow: u32,
    /// Colour and slot configuration (JSON).
    pub slots: Vec<(String, serde_json::Value)>,
}

fn save_in(tx: &Transaction<'_>, state: &ModelState) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO routes (model, active, weight, shadow) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (model) DO UPDATE SET active = ?2, weight = ?3, shadow = ?4",
        params![state.model, state.active, state.weight, state.shadow],
    )?;
    tx.execute("DELETE FROM slots WHERE model = ?1", [&state.model])?;
    for (color, config) in &state.slots {
        tx.execute(
            "INSERT INTO slots (model, color, config) VALUES (?1, ?2, ?3)",
            params![state.model, color, config.to_string()],
        )?;
    }
    Ok(())
}

impl Store {
    /// Remembers what each slot of a model runs and how traffic is split, so a restart
    /// brings back the same slots with the same one live.
    pub fn save_model_state(&self, state: &ModelState) -> Result<(), StoreError> {
        self.write(|tx| save_in(tx, state))
    }

    /// Remembers a model's slots and route and appends the audit event of the change that
    /// led to them, in one transaction: the state file holds both or neither, so the audit
    /// log never misses a change a restart would bring back, nor tells of one it would not.
    pub fn save_model_change(
        &self,
        state: &ModelState,
        event: NewEvent,
    ) -> Result<Event, StoreError> {
        self.write(|tx| {
            save_in(tx, state)?;
            append_in(tx, &self.anchor_key, event)
        })
    }

    /// Every model's remembered slots and route.
    pub fn model_states(&self) -> Result<Vec<ModelState>, StoreError> {
        self.read(|conn| {
            let mut routes = conn.prepare("SELECT model, active, weight, shadow FROM routes")?;
            let mut states: Vec<ModelState> = routes
                .query_map([], |r| {
                    Ok(ModelState {
                        model: r.get(0)?,
                        active: r.get(1)?,
                        weight: r.get(2)?,
                        shadow: r.get(3)?,
                        slots: Vec::new(),
                    })
                })?
                .collect::<Result<_, _>>()?;
            let mut slots = conn.prepare("SELECT color, config FROM slots WHERE model = ?1")?;
            for state in &mut states {
                state.slots = slots
                    .query_map([&state.model], |r| {
                        let text: String = r.get(1)?;
                        Ok((r.get(0)?, serde_json::from_str(&text).unwrap_or_default()))
                    })?
                    .collect::<Result<_, _>>()?;
            }
            Ok(states)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{event, temp_path, temp_store};
    use super::*;

    fn state(active: &str, weight: u32) -> ModelState {
        ModelState {
            model: "m".into(),
            active: active.into(),
            weight,
            shadow: 0,
            slots: vec![("blue".into(), serde_json::json!({"version": "v1"}))],
        }
    }

    #[test]
    fn a_model_change_writes_its_route_and_its_event_together() {
        let (store, _) = temp_store();
        store.save_model_state(&state("blue", 0)).unwrap();
        let stored = store
            .save_model_change(&state("green", 0), event("switched", "v2"))
            .unwrap();
        assert_eq!(store.model_states().unwrap(), vec![state("green", 0)]);
        assert_eq!(store.events("m", 10).unwrap(), vec![stored]);
        assert!(store.verify().unwrap().intact);
    }

    #[test]
    fn a_model_change_the_full_state_file_refuses_leaves_neither_route_nor_event() {
        let path = temp_path();
        let store = Store::open_limited(&path, Some(128 * 1024)).unwrap();
        store.save_model_state(&state("blue", 0)).unwrap();
        store.append(event("started", "v1")).unwrap();
        // Fill the file until SQLite refuses to grow it.
        let filler = vec![("m".to_string(), 0, vec![7u8; 4096], None)];
        while store.keep_captures(&filler).is_ok() {}
        // The route alone would fit (it rewrites rows in place); the event's detail cannot.
        let mut change = event("switched", "v2");
        change.detail = serde_json::json!({ "note": "x".repeat(16 * 1024) });
        let e = store
            .save_model_change(&state("green", 2500), change)
            .unwrap_err();
        assert!(e.unwritable(), "{e}");
        assert_eq!(store.model_states().unwrap(), vec![state("blue", 0)]);
        let events = store.events("m", 10).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, "started");
        assert!(store.write_error().is_some());
        // Proof that the route part on its own would have been written.
        store.save_model_state(&state("green", 2500)).unwrap();
        assert_eq!(store.model_states().unwrap(), vec![state("green", 2500)]);
    }
}
