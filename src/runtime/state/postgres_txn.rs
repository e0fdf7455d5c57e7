//! One transaction of the PostgreSQL state store, on one connection: what every state
//! operation runs its SQL on, and where a check that must commit with the transaction (a
//! consumer lease's fencing statement, say) runs its own.

use std::cell::RefCell;
use std::collections::HashMap;

use futures::executor::block_on;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

use super::txn_error::TxnError;
use crate::storage::postgres::from_state_client;

const OP: &str = "use the PostgreSQL state store";

/// An open transaction (`BEGIN` sent) on a connection, with the connection's prepared
/// statements. Calls block the calling thread (see `postgres_connections.rs`).
pub(crate) struct PgTxn<'t> {
    client: &'t Client,
    prepared: &'t RefCell<HashMap<String, Statement>>,
}

impl<'t> PgTxn<'t> {
    pub(crate) fn new(
        client: &'t Client,
        prepared: &'t RefCell<HashMap<String, Statement>>,
    ) -> Self {
        PgTxn { client, prepared }
    }

    /// Runs `sql` (prepared once per connection) in the transaction and returns its rows.
    pub(crate) fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, TxnError> {
        let fail = |e| TxnError::from(from_state_client(OP, e));
        let cached = self.prepared.borrow().get(sql).cloned();
        let statement = match cached {
            Some(statement) => statement,
            None => {
                let statement = block_on(self.client.prepare(sql)).map_err(fail)?;
                self.prepared
                    .borrow_mut()
                    .insert(sql.to_owned(), statement.clone());
                statement
            }
        };
        block_on(self.client.query(&statement, params)).map_err(fail)
    }
}
