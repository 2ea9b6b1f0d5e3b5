"""The search query language (docs/query.md): parse → AST → SQL, with a Python twin.

    from phototag.query import parse_query, search
    q = parse_query('animal/ taken:2021 ^src:manual , "tabby cat" taken-')
    photos = search(session, q, limit=50, resolvers={"similar": fn, "text": fn})
"""

from phototag.query.compile import compile_node, install_sqlite_functions
from phototag.query.errors import QueryError
from phototag.query.fields import FieldSpec, FieldValue, field_specs, register_field, register_sort, unregister_field
from phototag.query.nodes import Node, RankedTerm, SimilarTerm, TextTerm
from phototag.query.parse import Query, SortKey, parse
from phototag.query.service import Hit, Resolver, parse_query, search, search_hits, search_ids, unknown_tag_names

__all__ = [
    "FieldSpec",
    "FieldValue",
    "Hit",
    "Node",
    "Query",
    "QueryError",
    "RankedTerm",
    "Resolver",
    "SimilarTerm",
    "SortKey",
    "TextTerm",
    "compile_node",
    "field_specs",
    "install_sqlite_functions",
    "parse",
    "parse_query",
    "register_field",
    "register_sort",
    "search",
    "search_hits",
    "search_ids",
    "unknown_tag_names",
    "unregister_field",
]
