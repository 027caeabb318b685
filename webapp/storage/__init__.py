"""A tenant's `storage` keys: what scripts keep (worker/host_api.py writes them) and the pages
where editors list, read and delete them."""
