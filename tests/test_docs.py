"""README.md and docs/: relative links resolve, and mkdocs.yml lists every page.

These checks need neither MkDocs nor network access; CI's `mkdocs build --strict`
checks the built site as well.
"""

import pathlib
import re
import unicodedata

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXCLUDED = ("hooks",)  # mkdocs.yml's exclude_docs: not pages

FENCE = re.compile(r"^```.*?^```[ \t]*$", re.S | re.M)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.M)


def _pages():
    return sorted(
        p for p in DOCS.rglob("*.md") if p.relative_to(DOCS).parts[0] not in EXCLUDED
    )


def _markdown_files():
    return [ROOT / "README.md", *_pages()]


def _prose(text):
    """The text without fenced code blocks and code spans (links there are not links)."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def _links(text):
    prose = _prose(text)
    return INLINE_LINK.findall(prose) + REFERENCE_LINK.findall(prose)


def _heading_texts(text):
    for _, title in HEADING.findall(FENCE.sub("", text)):
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)  # a link: its text
        yield re.sub(r"[`*]", "", title)  # code and emphasis marks


def _mkdocs_slug(title):
    # Python-Markdown's toc.slugify, as mkdocs uses it
    value = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    value = re.sub(r"[^\w\s-]", "", value).strip().lower()
    return re.sub(r"[-\s]+", "-", value)


def _github_slug(title):
    value = re.sub(r"[^\w\- ]", "", title.strip().lower())
    return value.replace(" ", "-")


def _anchors(path):
    """Anchors that both GitHub and mkdocs give the headings of ``path``."""
    titles = list(_heading_texts(path.read_text(encoding="utf-8")))
    return {_mkdocs_slug(t) for t in titles} & {_github_slug(t) for t in titles}


def _relative_links():
    for source in _markdown_files():
        for target in _links(source.read_text(encoding="utf-8")):
            if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("//"):
                continue  # absolute URL (https:, mailto:, ...)
            yield pytest.param(source, target, id=f"{source.relative_to(ROOT)}->{target}")


def test_markdown_files_are_found():
    pages = {p.name for p in _pages()}
    assert {"index.md", "api.md"} <= pages
    assert len(list(_relative_links())) > 10


@pytest.mark.parametrize(("source", "target"), list(_relative_links()))
def test_relative_link_resolves(source, target):
    path_part, _, anchor = target.partition("#")
    assert not path_part.startswith("/"), "use a relative link, not an absolute path"
    dest = (source.parent / path_part).resolve() if path_part else source
    assert dest.exists(), f"{source.relative_to(ROOT)} links to {target}, which does not exist"
    if source.is_relative_to(DOCS):
        # mkdocs only sees docs/: a page may not link outside it
        assert dest.is_relative_to(DOCS), f"{source.relative_to(ROOT)} links outside docs/: {target}"
    if anchor:
        assert dest.suffix == ".md", f"anchor into a file that is not Markdown: {target}"
        assert anchor in _anchors(dest), (
            f"{source.relative_to(ROOT)} links to #{anchor}, which no heading of "
            f"{dest.relative_to(ROOT)} gives (on GitHub and in mkdocs alike)"
        )


def _nav_pages():
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = re.search(r"^nav:\n((?:[ \t]+.*\n|\n)+)", text, re.M)
    assert nav, "mkdocs.yml has no nav"
    return re.findall(r"([\w./-]+\.md)\s*$", nav.group(1), re.M)


def test_mkdocs_nav_lists_every_page_once():
    nav = _nav_pages()
    pages = [p.relative_to(DOCS).as_posix() for p in _pages()]
    assert len(nav) == len(set(nav)), "a page is listed twice in mkdocs.yml's nav"
    assert sorted(nav) == sorted(pages), (
        f"not in the nav: {sorted(set(pages) - set(nav))}; "
        f"in the nav but missing: {sorted(set(nav) - set(pages))}"
    )


def test_readme_speed_table_is_marked_and_names_the_machine():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.count("<!-- speed-table -->") == 1 and text.count("<!-- /speed-table -->") == 1
    table = text.split("<!-- speed-table -->", 1)[1].split("<!-- /speed-table -->", 1)[0]
    assert re.search(r"^\|.*\|\s*$", table, re.M), "no table between the speed-table markers"
    for word in ("cores", "BLAS"):
        assert word in table, f"the speed table does not say which {word}"
