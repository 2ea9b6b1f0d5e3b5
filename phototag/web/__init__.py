"""phototag serve: the local web app to browse, search and review tags (issue 15)."""
