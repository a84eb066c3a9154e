"""Cross-cutting pieces every domain uses: configuration, database, errors, crypto, audit."""
