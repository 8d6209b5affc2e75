"""Build an English prose corpus in FineWeb-Edu shard layout from Debian documentation packages.

Usage (as root, on Debian 12 "bookworm", network access to Debian's archive only):

    python scripts/make_docs_corpus.py OUTDIR [--work /tmp/hc] [--max-compressed-mib 54]

Steps: `apt-get download` each package below into WORK/deb, `dpkg -x` it into WORK/x/PKG,
turn the chosen files into plain text (rst / pod / asciidoc / vim-help kept raw, HTML and
Mallard XML stripped with a small html.parser extractor), cut each file into documents of at
most MAX_DOC_CHARS at paragraph breaks (like scripts/make_sample.py), drop tiny documents,
non-English and code-heavy documents (English stop-word ratio), drop exact duplicates,
shuffle with seed 0 and write OUTDIR/shard_NNNNN.parquet (one `text` column, zstd,
row_group_size 1024); the last shard is the validation split (VAL_FRACTION of documents).
Sources are listed most prose-like first; if the compressed size would exceed the cap,
whole sources are dropped from the end of the list.
"""
import argparse
import gzip
import hashlib
import json
import random
import re
import subprocess
import sys
from html.parser import HTMLParser
from multiprocessing import Pool
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from make_sample import pack  # same folder: the paragraph packer of the bundled sample

MAX_DOC_CHARS = 8000
MIN_DOC_CHARS = 200
VAL_FRACTION = 0.02
SHARD_CHARS = 20_000_000        # ~20 MB of text per training shard
CHARS_PER_BYTE = 3.85            # measured on the full mix at level 19 (3.89), with a margin
ZSTD_LEVEL = 19                 # slow to write, same speed to read; fits ~4 chars per byte
MIN_STOPWORD_RATIO = 0.10       # English prose ~0.35-0.45; code, tables and other languages far lower

# (package, licence, kind, include regex on path relative to the extracted package, exclude regex)
# Ordered most prose-like first: the size cap drops sources from the end.
SOURCES = [
    ("debian-handbook", "GPL-2+ or CC-BY-SA-3.0", "html",
     r"usr/share/doc/debian-handbook/html/en-US/.*\.html$", None),
    ("python3.11-doc", "PSF-2.0", "text",
     r"usr/share/doc/python3\.11/html/_sources/.*\.rst\.txt$", None),
    ("linux-doc-6.1", "GPL-2", "text",
     r"usr/share/doc/linux-doc-6\.1/Documentation/.*\.(rst|txt)(\.gz)?$",
     r"/(translations|devicetree/bindings|ABI|netlink/specs)/"),
    ("perl-doc", "Artistic-1 or GPL-1+", "text", r"usr/share/perl/[^/]+/pod/.*\.pod$", None),
    ("postgresql-doc-15", "PostgreSQL", "html", r"usr/share/doc/postgresql-doc-15/html/.*\.html$", None),
    ("gnucash-docs", "GFDL-1.1+ (no invariant sections)", "html",
     r"usr/share/doc/gnucash-docs/gnucash-(guide|help)-en/.*\.html$", None),
    ("gimp-help-en", "GPL-2+", "html", r"usr/share/gimp/2\.0/help/en/.*\.html$", None),
    ("installation-guide-amd64", "GPL-2+", "html",
     r"usr/share/doc/installation-guide-amd64/en/.*\.html$", None),
    ("harden-doc", "GPL-2+", "html", r"usr/share/doc/harden-doc/html/en-US/.*\.html$", None),
    ("debian-reference-en", "GPL-2+", "html", r"usr/share/debian-reference/.*\.en\.html$", None),
    ("developers-reference", "MIT-like (Debian)", "html",
     r"usr/share/developers-reference/[^/]+\.html$", r"/developers-reference\.html$"),
    ("maint-guide", "MIT-like (Debian)", "html", r"usr/share/doc/maint-guide/html/.*\.en\.html$", None),
    ("debian-policy", "GPL-2+", "text", r"usr/share/doc/debian-policy/policy\.txt(\.gz)?$", None),
    ("debian-faq", "GPL-2+", "html", r"usr/share/doc/debian/FAQ/.*\.en\.html$", r"/index\.en\.html$"),
    ("debian-history", "GPL-2+", "text",
     r"usr/share/doc/debian-history/(docs/project-history\.en\.txt\.gz|social-contract\.txt\.gz|constitution\.txt\.gz|debian-manifesto\.gz|dedication/dedication-[0-9.]+\.txt)$", None),
    ("debian-edu-doc-en", "GPL-2+", "html", r"usr/share/doc/debian-edu-doc-en/debian-edu-bookworm-manual\.html$", None),
    ("gnome-user-docs", "CC-BY-SA-3.0", "html", r"usr/share/help/C/.*\.page$", None),
    ("libreoffice-help-en-us", "MPL-2.0", "html", r"usr/share/libreoffice/help/en-US/text/.*\.html$", None),
    ("kicad-doc-en", "GPL-3+ or CC-BY-3.0+", "html", r"usr/share/doc/kicad/help/en/.*\.html$", None),
    ("python-django-doc", "BSD-3-clause", "html", r"usr/share/doc/python-django-doc/html/.*\.html$",
     r"/(_modules|_sources)/|/(genindex|search|py-modindex)\.html$"),
    ("rust-doc", "MIT or Apache-2.0", "html",
     r"usr/share/doc/rust-doc/html/(book|reference|nomicon|rust-by-example|edition-guide|embedded-book|rustc|rustdoc|unstable-book)/.*\.html$",
     r"/print\.html$|/(toc|404)\.html$"),
    ("git-doc", "GPL-2", "text", r"usr/share/doc/git-doc/.*\.txt(\.gz)?$", r"RelNotes"),
    ("sphinx-doc", "BSD-2-clause", "text", r"usr/share/doc/sphinx-doc/html/_sources/.*\.txt$", None),
    ("docutils-doc", "public domain / BSD-2-clause", "text", r"usr/share/doc/docutils-doc/.*\.txt(\.gz)?$", None),
    ("vim-runtime", "Vim", "text", r"usr/share/vim/vim90/doc/.*\.txt$", None),
    ("apache2-doc", "Apache-2.0", "html", r"usr/share/doc/apache2-doc/manual/.*\.html(\.en)?$",
     r"/(de|es|fr|ja|ko|pt-br|tr|zh-cn|da|ru)/"),
    ("r-doc-html", "GPL-2+", "html", r"usr/share/R/doc/manual/.*\.html$", None),
    ("haskell98-report", "Haskell-Report (free)", "html", r"usr/share/doc/haskell98-report/html/.*\.html$", None),
    ("emacs-common", "GPL-3+", "text",
     r"usr/share/emacs/[0-9.]+/etc/(NEWS[0-9.-]*|[A-Z-]+-NEWS|PROBLEMS|DEBUG|HISTORY|MACHINES|TODO|ETAGS\.README|DISTRIB|tutorials/TUTORIAL|gnus-tut\.txt|enriched\.txt)(\.gz)?$", None),
    ("dict-devil", "public domain", "text", r"usr/share/dictd/.*\.dict\.dz$", None),
    ("dict-jargon", "public domain (Jargon File 4.4.7)", "text", r"usr/share/dictd/.*\.dict\.dz$", None),
    ("fortunes", "public domain / free (see copyright)", "fortune", r"usr/share/games/fortunes/[a-z-]+$", None),
    ("zsh-doc", "MIT-like (zsh)", "html", r"usr/share/doc/zsh-common/html/.*\.html$|usr/share/doc/zsh.*/.*\.html$", None),
    ("exim4-doc-html", "GPL-2+", "html", r"usr/share/doc/exim4-doc-html/.*\.html$", None),
    ("postfix-doc", "IPL-1.0 or EPL-2.0", "html", r"usr/share/doc/postfix/html/.*\.html$", None),
    ("bind9-doc", "MPL-2.0", "html", r"usr/share/doc/bind9-doc/.*\.html$", None),
    ("aptitude-doc-en", "GPL-2+", "html", r"usr/share/doc/aptitude/html/en/.*\.html$", None),
    ("xorg-docs", "MIT/X11", "html", r"usr/share/doc/xorg-docs/.*\.html$", None),
    ("bash-doc", "GPL-3+", "html", r"usr/share/doc/bash/.*\.html$", None),
    ("lilypond-doc-html", "GFDL-1.3+ (no invariant sections)", "html", r"usr/share/doc/lilypond/html/.*\.html$",
     r"/snippets/|/internals/"),
    ("qtbase5-doc-html", "GFDL-1.3 (no invariant sections)", "html", r"usr/share/qt5/doc/.*\.html$", r"-members\.html$|-obsolete\.html$"),
    ("python-sklearn-doc", "BSD-3-clause", "text", r"usr/share/doc/python-sklearn-doc/html/_sources/.*\.txt$", r"/generated/"),
    ("python-pandas-doc", "BSD-3-clause", "text", r"usr/share/doc/python-pandas-doc/html/_sources/.*\.txt$", r"/(api|whatsnew)/"),
    ("python-astropy-doc", "BSD-3-clause", "text", r"usr/share/doc/python-astropy-doc/html/_sources/.*\.txt$", r"/api/|/changelog"),
    ("python-statsmodels-doc", "BSD-3-clause", "text", r"usr/share/doc/python-statsmodels-doc/html/_sources/.*\.txt$", r"/generated/"),
    ("ghc-doc", "BSD-3-clause (GHC)", "text", r"usr/share/doc/ghc-doc/html/users_guide/_sources/.*\.txt$", None),
    ("erlang-doc", "Apache-2.0", "html", r"usr/share/doc/erlang-doc/.*\.html$", r"/wx-[0-9.]+/"),
    ("manpages", "GPL-2+ / BSD / free (man-pages)", "man", r"usr/share/man/man[1-8]/.*\.gz$", None),
    ("manpages-dev", "GPL-2+ / BSD / free (man-pages)", "man", r"usr/share/man/man[1-8]/.*\.gz$", None),
    ("octave-doc", "GPL-3+", "html", r"usr/share/doc/octave/octave\.html/.*\.html$", None),
    ("maxima-doc", "GPL-2+", "html", r"usr/share/doc/maxima-doc/html/.*\.html$", None),
    ("libssl-doc", "Apache-2.0", "man", r"usr/share/man/man[1-8].*/.*\.gz$", None),
    ("dict-foldoc", "GFDL-1.1+", "text", r"usr/share/dictd/.*\.dict\.dz$", None),
    ("python-scipy-doc", "BSD-3-clause", "html", r"usr/share/doc/python-scipy-doc/html/.*\.html$",
     r"/(_modules|_sources|_static)/|/(genindex|search|py-modindex)\.html$"),
    ("openjdk-17-doc", "GPL-2 with Classpath exception", "html", r"usr/share/doc/openjdk-17-jre-headless/api/.*\.html$",
     r"/class-use/|/package-(tree|use)\.html$|-(tree|use)\.html$|index-files/|allclasses|allpackages"),
    ("dict-gcide", "GPL-3+", "text", r"usr/share/dictd/.*\.dict\.dz$", None),
]

STOPWORDS = set("""the of and to a in is that for it as with be on are this by or not an from
at which can you if will when this these use used also has have its it's more one may all
there their they we was were than other only into some such so but then each what how""".split())

BLOCK = {"p", "div", "br", "li", "ul", "ol", "dl", "dt", "dd", "h1", "h2", "h3", "h4", "h5", "h6",
         "pre", "table", "tr", "blockquote", "section", "article", "hr", "title", "caption",
         "figure", "figcaption", "tbody", "thead", "screen", "item", "list", "terms", "steps",
         "note", "example", "listing", "synopsis", "tree", "code-block", "codeblock", "bookinfo",
         "refsect1", "refsect2", "sect1", "sect2", "page", "info", "credit", "desc", "links"}
SKIP_TAGS = {"script", "style", "head", "nav", "noscript", "svg", "button", "form", "select",
             "credit", "license", "revision", "link", "media"}
SKIP_CLASS = {"sphinxsidebar", "related", "footer", "navheader", "navfooter", "navigation", "breadcrumb",
              "breadcrumbs", "headerlink", "sidebar", "menu-bar", "nav-chapters", "mobile-nav-chapters", "toc",
              "docnav", "page-footer", "nav-wrapper", "sidebar-scrollbox", "banner", "contentinfo",
              "nav", "topnav", "top-nav", "skip-link", "menu", "searchbox", "toctree-wrapper"}
VOID = {"br", "img", "hr", "input", "meta", "link", "wbr", "col", "area", "base", "source",
        "embed", "param", "track"}


class Extractor(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out = []
        self.stack = []          # (tag, skipping)
        self.pre = 0

    def skipping(self):
        return bool(self.stack) and self.stack[-1][1]

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        tokens = set(((a.get("class") or "") + " " + (a.get("id") or "") + " " + (a.get("role") or "")).split())
        skip = self.skipping() or tag in SKIP_TAGS or (tag not in ("html", "body") and bool(tokens & SKIP_CLASS))
        if tag not in VOID:
            self.stack.append((tag, skip))
        if skip:
            return
        if tag in ("pre", "screen", "code-block", "programlisting"):
            self.pre += 1
        if tag in BLOCK:
            self.out.append("\n\n")
        if tag == "li":
            self.out.append("- ")
        elif tag in ("td", "th"):
            self.out.append(" ")

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                t, skip = self.stack[i]
                del self.stack[i:]
                if not skip:
                    if tag in ("pre", "screen", "code-block", "programlisting") and self.pre:
                        self.pre -= 1
                    if tag in BLOCK:
                        self.out.append("\n\n")
                return

    def handle_data(self, data):
        if self.skipping():
            return
        if self.pre:
            self.out.append("\x00" + data.replace("\n\n", "\n") + "\x00")
        else:
            self.out.append(re.sub(r"\s+", " ", data))


def html_to_text(html: str) -> str:
    p = Extractor()
    try:
        p.feed(html)
        p.close()
    except Exception:
        pass
    raw = "".join(p.out)
    parts = raw.split("\x00")
    # even parts: flowing text; odd parts: preformatted
    res = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            part = re.sub(r"[ \t]*\n[ \t]*", "\n", part)
            part = re.sub(r" {2,}", " ", part)
        res.append(part)
    text = "".join(res)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def read(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix in (".gz", ".dz"):
        data = gzip.decompress(data)
    return data.decode("utf-8", errors="replace")


def file_text(kind: str, path: Path) -> str:
    text = read(path)
    if kind == "html":
        text = html_to_text(text)
        text = text.split("Help content debug info:")[0]          # LibreOffice help trailer
        text = re.sub(r"^(Download the ebook|Django [0-9.]+ documentation|Home \| Table of contents.*|LibreOffice [0-9.]+ Help|Contents|Index 🔎︎)\n", "", text, flags=re.M)
    elif kind == "fortune":
        text = re.sub(r"(?m)^%\s*$", "", text)
    elif kind == "man":
        text = man_to_text(text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def man_to_text(src: str) -> str:
    """Render with groff (unwrapped lines, no hyphenation), drop header/footer and the 7-space indent."""
    r = subprocess.run(["groff", "-t", "-e", "-man", "-Tutf8", "-P", "-cbou", "-rLL=2000n", "-rHY=0"],
                       input=src.encode(), capture_output=True, timeout=60)
    lines = r.stdout.decode("utf-8", "replace").rstrip().split("\n")
    lines = [ln.rstrip() for ln in lines[1:-1]]
    return re.sub(r"(?m)^ {1,7}", "", "\n".join(lines))


def _unused_man_to_text(src: str) -> str:
    """Crude roff stripping: drop requests and comments, keep running text."""
    out = []
    for line in src.split("\n"):
        if line.startswith(('.\\"', "'\\\"")):
            continue
        if line.startswith((".PP", ".LP", ".P ", ".SH", ".SS", ".TP", ".IP", ".sp", ".RS", ".RE", ".br")):
            out.append("")
            rest = line.split(None, 1)[1] if " " in line else ""
            if rest:
                out.append(rest.strip('"'))
            continue
        if line.startswith((".", "'")):
            m = re.match(r"^\.(B|I|BR|IR|RB|RI|BI|IB)\s+(.*)$", line)
            if m:
                out.append(m.group(2).replace('"', ""))
            continue
        out.append(line)
    text = "\n".join(out)
    text = re.sub(r"\\f[BIRP]|\\f\(..|\\\*\(..|\\&|\\\||\\\^", "", text)
    text = text.replace("\\-", "-").replace("\\e", "\\").replace("\\(em", "--")
    return text


def pieces(text: str):
    """Paragraphs, with a very long one (e.g. a big code block) split at line breaks."""
    for para in text.split("\n\n"):
        if len(para) <= MAX_DOC_CHARS:
            yield para
            continue
        cur = ""
        for line in para.split("\n"):
            if len(cur) + len(line) + 1 > MAX_DOC_CHARS and cur:
                yield cur
                cur = ""
            cur = cur + "\n" + line if cur else line[:MAX_DOC_CHARS]
        yield cur


def documents(text: str):
    return pack(pieces(text), MAX_DOC_CHARS)


def prose_ok(doc: str) -> bool:
    if len(doc) < MIN_DOC_CHARS:
        return False
    words = re.findall(r"[A-Za-z']+", doc)
    if len(words) < 30:
        return False
    stop = sum(w.lower() in STOPWORDS for w in words)
    letters = sum(map(len, words))
    return stop / len(words) >= MIN_STOPWORD_RATIO and letters / len(doc) >= 0.45


def process(args):
    kind, path = args
    try:
        text = file_text(kind, Path(path))
    except Exception as e:  # noqa: BLE001
        print(f"  skip {path}: {e}", file=sys.stderr)
        return []
    return [d for d in documents(text) if prose_ok(d)]


def fetch(pkg: str, work: Path) -> Path:
    debdir, xdir = work / "deb", work / "x" / pkg
    debdir.mkdir(parents=True, exist_ok=True)
    debs = sorted(debdir.glob(f"{pkg}_*.deb"))
    if not debs:
        subprocess.run(["apt-get", "download", pkg], cwd=debdir, check=True)
        debs = sorted(debdir.glob(f"{pkg}_*.deb"))
    if not xdir.exists():
        xdir.mkdir(parents=True)
        subprocess.run(["dpkg", "-x", str(debs[-1]), str(xdir)], check=True)
    return debs[-1]


def _write_one(args):
    path, shard = args
    pq.write_table(pa.table({"text": shard}), path, row_group_size=1024, compression="zstd",
                   compression_level=ZSTD_LEVEL)
    return path, len(shard), sum(map(len, shard)), Path(path).stat().st_size


def write_shards(out: Path, docs: list, jobs: int = 2) -> int:
    """Split shuffled docs: first VAL_FRACTION -> last shard (validation), rest round-robin into train shards."""
    n_val = int(len(docs) * VAL_FRACTION)
    val, train = docs[:n_val], docs[n_val:]
    n_train = max(1, round(sum(map(len, train)) / SHARD_CHARS))
    shards = [train[i::n_train] for i in range(n_train)] + [val]
    for old in out.glob("shard_*.parquet"):
        old.unlink()
    size = 0
    with Pool(jobs) as pool:
        for path, n, chars, nbytes in pool.imap(_write_one, [(str(out / f"shard_{i:05d}.parquet"), sh)
                                                              for i, sh in enumerate(shards)]):
            size += nbytes
            print(f"{Path(path).name}: {n:,} docs, {chars:,} chars, {nbytes / 2**20:.1f} MiB", flush=True)
    return size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--work", default="/tmp/hc")
    ap.add_argument("--max-compressed-mib", type=float, default=54.0)
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    work, out = Path(a.work), Path(a.outdir)
    out.mkdir(parents=True, exist_ok=True)

    seen = set()
    per_source = []
    with Pool(a.jobs) as pool:
        for pkg, lic, kind, inc, exc in SOURCES:
            deb = fetch(pkg, work)
            version = deb.name.split("_")[1].replace("%3a", ":")
            root = work / "x" / pkg
            inc_re, exc_re = re.compile(inc), re.compile(exc) if exc else None
            files = sorted(str(p) for p in root.rglob("*")
                           if p.is_file() and not p.is_symlink()
                           and inc_re.search(str(p.relative_to(root)))
                           and not (exc_re and exc_re.search("/" + str(p.relative_to(root)))))
            docs = []
            for ds in pool.imap(process, [(kind, f) for f in files], chunksize=16):
                for d in ds:
                    h = hashlib.sha1(d.encode()).digest()
                    if h not in seen:
                        seen.add(h)
                        docs.append(d)
            chars = sum(map(len, docs))
            per_source.append(dict(package=pkg, version=version, licence=lic, files=len(files),
                                   docs=len(docs), chars=chars, _docs=docs))
            print(f"{pkg:28s} {version:26s} files={len(files):6d} docs={len(docs):7d} chars={chars:,}", flush=True)

    # size cap: zstd-19 parquet of this mixed corpus holds ~3.89 chars per byte (measured: 247.1M chars
    # -> 60.5 MiB); keep whole sources, most prose-like first, while the character total fits the cap.
    max_chars = a.max_compressed_mib * 2**20 * CHARS_PER_BYTE
    total = 0
    for s in per_source:
        if total + s["chars"] > max_chars:
            print(f"dropping {s['package']} ({s['chars']:,} chars) to stay under the cap", flush=True)
            s["dropped"] = True
        else:
            total += s["chars"]
    # shuffle ALL documents (seed 0), then remove the dropped sources' documents
    tagged = [(k, d) for k, s in enumerate(per_source) for d in s["_docs"]]
    random.Random(0).shuffle(tagged)
    docs = [d for k, d in tagged if not per_source[k].get("dropped")]
    size = write_shards(out, docs, a.jobs)
    summary = dict(
        total_docs=len(docs), total_chars=sum(map(len, docs)),
        shards=len(list(out.glob("shard_*.parquet"))), train_docs=len(docs) - int(len(docs) * VAL_FRACTION),
        val_docs=int(len(docs) * VAL_FRACTION), compressed_mib=round(size / 2**20, 2),
        sources=[{k: v for k, v in s.items() if k != "_docs"} for s in per_source])
    (out.parent / f"{out.name}_manifest.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "sources"}))


if __name__ == "__main__":
    main()
