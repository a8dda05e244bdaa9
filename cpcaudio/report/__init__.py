"""Reports of every stage: results tables (:mod:`.tables`), plots (:mod:`.plots`) and HTML pages
(:mod:`.html`)."""
