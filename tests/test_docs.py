"""README.md and ARCHITECTURE.md stay true to the tree: links resolve, the layout table names what exists."""

import re

from support import ROOT

README = (ROOT / "README.md").read_text()
ARCHITECTURE = (ROOT / "ARCHITECTURE.md").read_text()


def test_relative_links_resolve_inside_the_repository():
    for doc, text in (("README.md", README), ("ARCHITECTURE.md", ARCHITECTURE)):
        for target in re.findall(r"\]\(([^)#]+)\)", text):
            if "://" not in target:
                path = (ROOT / target).resolve()
                assert path.is_relative_to(ROOT) and path.exists(), f"{doc} links {target}"
    assert "](./ARCHITECTURE.md)" in README


def test_readme_layout_table_names_paths_that_exist():
    section = README.split("## Layout", 1)[1].split("\n## ", 1)[0]
    paths = re.findall(r"^\| `([^`]+)` \|", section, re.M)
    assert len(paths) >= 10
    for p in paths:
        if "<" in p:  # bridges/<protocol>
            assert any((ROOT / p.split("<")[0]).iterdir()), p
        else:
            assert (ROOT / p).exists(), p


def test_architecture_layers_name_the_packages_of_importlinter():
    layers = (ROOT / ".importlinter").read_text().split("layers =", 1)[1].split("[", 1)[0]
    packages = {name.replace(".", "/") for line in layers.split() for name in line.split("|") if name.strip()}
    block = ARCHITECTURE.split("## Layers", 1)[1].split("```")[1]
    named = {line.split()[0] for line in block.strip().splitlines() if line[:1].strip()}
    for p in packages:
        assert p in named or p.replace("bridges", "bridges/<p>") in named, p
        assert (ROOT / p).is_dir(), p
