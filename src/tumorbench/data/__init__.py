"""From a download to the arrays and splits training reads: the download, prepare, duplicates and
split stages' library.

It owns getting an archive (`download`, `synthetic` for the embedded sample data), finding and
decoding samples (`readers`), the prepared arrays (`prepare`, read back by `prepared`), the
duplicate audit (`duplicates`) and the train/validation splits (`splits`). It may import `core` only.
"""
