"""One XML mutator for the fuzz suite: attributes set to odd values or deleted, elements deleted, repeated or
renamed, drawn from hypothesis data."""
from __future__ import annotations

import copy
import xml.etree.ElementTree as ElementTree

from hypothesis import strategies as st

OPERATIONS = ["set", "set", "delete_attribute", "delete", "repeat", "retag"]


def mutate_xml(data, root: ElementTree.Element, values: list[str], tags: list[str], max_edits: int,
               include_root: bool = True) -> None:
    """Apply 1..max_edits random edits to the tree under `root` in place (`include_root`: the root may be edited)."""
    for _ in range(data.draw(st.integers(1, max_edits))):
        parents = {child: parent for parent in root.iter() for child in parent}
        elements = list(root.iter()) if include_root else list(root.iter())[1:]
        element = data.draw(st.sampled_from(elements))
        operation = data.draw(st.sampled_from(OPERATIONS))
        if operation == "set" and element.attrib:
            element.set(data.draw(st.sampled_from(sorted(element.attrib))), data.draw(st.sampled_from(values)))
        elif operation == "delete_attribute" and element.attrib:
            del element.attrib[data.draw(st.sampled_from(sorted(element.attrib)))]
        elif operation == "delete" and element in parents:
            parents[element].remove(element)
        elif operation == "repeat" and element in parents:
            siblings = parents[element]
            siblings.insert(list(siblings).index(element), copy.deepcopy(element))
        elif operation == "retag":
            element.tag = data.draw(st.sampled_from(tags))
