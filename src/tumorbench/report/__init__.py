"""The aggregate stage's library: reports/README.md, the tables, summary.json, figures and model cards.

It owns reading what the evaluate stages wrote (`results`), the tables and summary (`aggregate`),
the validity section (`validity`), the cross-validated rankings (`rankings`), the figures (`figures`)
and the model cards (`cards`). It may import `core`, `data`, `models` and `validity`; nothing below imports it.
"""
