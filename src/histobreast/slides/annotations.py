"""Region annotations in and out: Aperio ImageScope XML (BACH), ASAP XML (CAMELYON), QuPath GeoJSON.

Every reader returns :class:`Region` objects (a label and a shapely polygon in level-0 pixels);
class names are mapped through a config's ``label_map`` by :func:`map_labels`, which refuses a
name the map does not know. Writers go through :mod:`histobreast.atomic`. GeoJSON is QuPath's
flavour: ``objectType`` (``annotation`` or ``detection``), ``classification.name`` and
``measurements`` in each feature's properties.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from shapely.geometry import MultiPolygon, Polygon, box, mapping, shape
from shapely.validation import make_valid

from histobreast.atomic import atomic_write_text
from histobreast.errors import HistobreastError

ANNOTATION_SUFFIXES = (".xml", ".geojson", ".json")


class AnnotationError(HistobreastError):
    """An annotation file that cannot be read or does not fit its slide (the message names the file)."""


@dataclass(frozen=True)
class Region:
    """One labelled region in level-0 pixels; ``kind`` is QuPath's objectType."""

    label: str
    geometry: Polygon | MultiPolygon
    kind: str = "annotation"
    measurements: dict[str, float] = field(default_factory=dict, compare=False)


def _polygon(points: Sequence[tuple[float, float]], path: Path, where: str) -> Polygon | MultiPolygon:
    if len(points) < 3:
        raise AnnotationError(f"{path}: {where} has {len(points)} vertices; a region needs at least 3")
    poly = Polygon(points)
    if not poly.is_valid:  # self-crossing hand-drawn outlines are common: repair, keep the area
        poly = make_valid(poly)
        poly = MultiPolygon([g for g in getattr(poly, "geoms", [poly]) if isinstance(g, Polygon)]) or poly
    return poly


def _parse_xml(path: Path) -> ET.Element:
    try:
        return ET.parse(path).getroot()
    except (OSError, ET.ParseError) as err:
        raise AnnotationError(f"{path}: not a readable XML annotation file ({err})") from None


def read_imagescope_xml(path: str | Path) -> list[Region]:
    """Aperio ImageScope XML: ``Annotation/Regions/Region`` with the label in the region's ``Text`` or
    its ``Attributes/Attribute Value`` (else the annotation's), ``Vertices/Vertex X Y`` in level-0 px."""
    path = Path(path)
    root = _parse_xml(path)
    regions = []
    for a_index, annotation in enumerate(root.iter("Annotation"), start=1):
        fallback = _attribute_label(annotation.find("Attributes")) or annotation.get("Name", "")
        for region in annotation.iter("Region"):
            where = f"Annotation {a_index} Region {region.get('Id', '?')}"
            label = (region.get("Text") or "").strip() or _attribute_label(region.find("Attributes")) or fallback
            if not label:
                raise AnnotationError(f"{path}: {where} has no label (Text or Attribute Value)")
            points = [(float(v.get("X", "nan")), float(v.get("Y", "nan"))) for v in region.iter("Vertex")]
            regions.append(Region(label.strip(), _polygon(points, path, where)))
    return regions


def _attribute_label(attributes: ET.Element | None) -> str:
    if attributes is None:
        return ""
    for attribute in attributes.iter("Attribute"):
        value = (attribute.get("Value") or "").strip()
        if value:
            return value
    return ""


def read_asap_xml(path: str | Path) -> list[Region]:
    """ASAP XML (CAMELYON): ``Annotations/Annotation[@PartOfGroup]/Coordinates/Coordinate[@Order,@X,@Y]``."""
    path = Path(path)
    root = _parse_xml(path)
    regions = []
    for annotation in root.iter("Annotation"):
        name = annotation.get("Name", "?")
        label = (annotation.get("PartOfGroup") or "").strip()
        if not label or label == "None":
            raise AnnotationError(f"{path}: annotation {name!r} has no PartOfGroup (its class)")
        coords = sorted(annotation.iter("Coordinate"), key=lambda c: float(c.get("Order", 0)))
        points = [(float(c.get("X", "nan")), float(c.get("Y", "nan"))) for c in coords]
        regions.append(Region(label, _polygon(points, path, f"annotation {name!r}")))
    return regions


def read_geojson(path: str | Path) -> list[Region]:
    """QuPath GeoJSON (a FeatureCollection, a list of features, or one feature) with polygons."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AnnotationError(f"{path}: not a readable GeoJSON file ({err})") from None
    features = data.get("features", [data]) if isinstance(data, dict) else data
    regions = []
    for number, feature in enumerate(features, start=1):
        props = feature.get("properties") or {}
        classification = props.get("classification") or {}
        label = classification.get("name") if isinstance(classification, dict) else None
        if not label:
            raise AnnotationError(f"{path}: feature {number} has no classification name")
        try:
            geometry = shape(feature["geometry"])
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise AnnotationError(f"{path}: feature {number} has no readable geometry ({err})") from None
        if not isinstance(geometry, (Polygon, MultiPolygon)):
            raise AnnotationError(f"{path}: feature {number} is a {geometry.geom_type}; regions must be polygons")
        kind = props.get("objectType", "annotation")
        measurements = {str(k): float(v) for k, v in (props.get("measurements") or {}).items()}
        regions.append(Region(label, geometry, kind, measurements))
    return regions


def read_annotations(path: str | Path) -> list[Region]:
    """Read any supported annotation file; XML flavour told apart by its root element."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"{path}: annotation file not found")
    if path.suffix.lower() in (".geojson", ".json"):
        return read_geojson(path)
    if path.suffix.lower() != ".xml":
        raise AnnotationError(f"{path}: unknown annotation format; expected {', '.join(ANNOTATION_SUFFIXES)}")
    root = _parse_xml(path)
    return read_asap_xml(path) if root.tag == "ASAP_Annotations" else read_imagescope_xml(path)


def lookup_label(label_map: Mapping[str, str], label: str, where: str | Path) -> str:
    """``label_map[label]`` matched ignoring case and spaces; a name the map does not know is refused
    naming ``where`` (the annotation file), so no region is silently dropped or mislabelled."""
    keys = {_key(k): v for k, v in label_map.items()}
    if _key(label) not in keys:
        raise AnnotationError(
            f"{where}: annotation class {label!r} is not in the class map (known: {', '.join(label_map)})"
        )
    return keys[_key(label)]


def map_labels(regions: Iterable[Region], label_map: Mapping[str, str], path: str | Path) -> list[Region]:
    """Regions relabelled through ``label_map`` (see :func:`lookup_label`)."""
    return [replace(region, label=lookup_label(label_map, region.label, path)) for region in regions]


def _key(name: str) -> str:
    return "".join(name.lower().split())


def check_inside(regions: Iterable[Region], dimensions: tuple[int, int], path: str | Path) -> None:
    """Refuse regions that reach outside a slide of level-0 ``dimensions`` (wrong slide or scale)."""
    frame = box(0, 0, *dimensions)
    for number, region in enumerate(regions, start=1):
        if not frame.buffer(1).contains(region.geometry):
            x0, y0, x1, y1 = (round(v) for v in region.geometry.bounds)
            raise AnnotationError(
                f"{path}: region {number} ({region.label}) spans x {x0}..{x1}, y {y0}..{y1}, outside the "
                f"{dimensions[0]}x{dimensions[1]} slide"
            )


def _exterior(geometry: Polygon | MultiPolygon) -> list[list[tuple[float, float]]]:
    polys = geometry.geoms if isinstance(geometry, MultiPolygon) else [geometry]
    return [list(p.exterior.coords)[:-1] for p in polys]


def write_imagescope_xml(path: str | Path, regions: Sequence[Region]) -> Path:
    """Aperio ImageScope XML, one Annotation per label, the label in each Region's Text (as BACH)."""
    root = ET.Element("Annotations", MicronsPerPixel="0")
    for a_id, label in enumerate(dict.fromkeys(r.label for r in regions), start=1):
        annotation = ET.SubElement(root, "Annotation", Id=str(a_id), Name=label, LineColor="65280")
        attributes = ET.SubElement(annotation, "Attributes")
        ET.SubElement(attributes, "Attribute", Name="Description", Id="0", Value="")
        container = ET.SubElement(annotation, "Regions")
        r_id = 0
        for region in (r for r in regions if r.label == label):
            for ring in _exterior(region.geometry):
                r_id += 1
                element = ET.SubElement(container, "Region", Id=str(r_id), Type="0", Text=label)
                vertices = ET.SubElement(element, "Vertices")
                for x, y in ring:
                    ET.SubElement(vertices, "Vertex", X=f"{x:.1f}", Y=f"{y:.1f}", Z="0")
    return _write_xml(path, root)


def write_asap_xml(path: str | Path, regions: Sequence[Region]) -> Path:
    """ASAP XML with one group per label."""
    root = ET.Element("ASAP_Annotations")
    container = ET.SubElement(root, "Annotations")
    number = 0
    for region in regions:
        for ring in _exterior(region.geometry):
            element = ET.SubElement(
                container, "Annotation", Name=f"Annotation {number}", Type="Polygon", PartOfGroup=region.label
            )
            number += 1
            coords = ET.SubElement(element, "Coordinates")
            for order, (x, y) in enumerate(ring):
                ET.SubElement(coords, "Coordinate", Order=str(order), X=f"{x:.1f}", Y=f"{y:.1f}")
    groups = ET.SubElement(root, "AnnotationGroups")
    for label in dict.fromkeys(r.label for r in regions):
        ET.SubElement(groups, "Group", Name=label, PartOfGroup="None", Color="#64FE2E")
    return _write_xml(path, root)


def _write_xml(path: str | Path, root: ET.Element) -> Path:
    ET.indent(root)
    return atomic_write_text(path, ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n")


def geojson_feature(region: Region, colour: Sequence[int] | None = None) -> dict[str, Any]:
    """One QuPath feature: geometry in level-0 px, objectType, classification, measurements."""
    classification: dict[str, Any] = {"name": region.label}
    if colour is not None:
        classification["color"] = [int(c) for c in colour]
    return {
        "type": "Feature",
        "geometry": mapping(region.geometry),
        "properties": {
            "objectType": region.kind,
            "classification": classification,
            "measurements": {k: round(float(v), 6) for k, v in region.measurements.items()},
        },
    }


def write_geojson(
    path: str | Path, regions: Sequence[Region], colours: Mapping[str, Sequence[int]] | None = None
) -> Path:
    """A FeatureCollection QuPath imports (File > Import objects, or drag the file onto the slide)."""
    features = [geojson_feature(r, (colours or {}).get(r.label)) for r in regions]
    return atomic_write_text(path, json.dumps({"type": "FeatureCollection", "features": features}) + "\n")
