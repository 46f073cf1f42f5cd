"""Alembic environment: run migrations on the connection `persea.db.upgrade` hands over."""

from alembic import context

from persea.db.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - the package always passes a connection
    raise RuntimeError("run migrations through persea.db.upgrade(url)")

context.configure(connection=connection, target_metadata=metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
