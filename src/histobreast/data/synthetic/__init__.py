"""Synthetic H&E images and dataset trees in the real BreaKHis and BACH layouts (numpy + OpenCV).

The embedded data of the demo and of most tests. Images are rendered in optical density (Beer-Lambert
law with a reference haematoxylin and eosin stain matrix), so colours mix like real stains: pink
eosin stroma with fibre texture, purple-blue haematoxylin nuclei, white lumina and fat.

Classes differ the way real ones do (sizes are physical, in µm, so they scale with µm/pixel):

- normal / benign: sparse, small (5-7 µm), round, regular nuclei lining gland and duct-like rings
  around white lumina; abundant stroma, fat in normal tissue;
- in situ: round duct-like structures filled with dense, larger nuclei inside an intact rim of flat
  myoepithelial nuclei;
- invasive / malignant: dense, large (8-13 µm), pleomorphic (elongated, lobulated) nuclei in sheets,
  nests and single files that disrupt the architecture; mucin pools (MC) and papillary fronds (PC).

Malignant nuclei are large, irregular and clustered, so a nuclei-density method (KREM: threshold at
the gray mean, components with area > 80 px and area/perimeter < 2.5 at 0.42 µm/px) finds far more of
them, concentrated in the clusters. Patients have their own stain, illumination, nuclear size and
density (images of one patient look alike, so patient-level splits matter); each image adds small
jitter and sensor noise, so classes are learnable but not trivially. Every image is a pure function
of (seed, patient, file name): generating a subset gives the same pixels.
"""

from histobreast.data.synthetic.render import render_he
from histobreast.data.synthetic.tissue import TISSUES, NucleiSpec, Style, Tissue
from histobreast.data.synthetic.trees import SYNTH_MARKER, plan_breakhis, synth_bach, synth_breakhis

__all__ = [
    "SYNTH_MARKER",
    "TISSUES",
    "NucleiSpec",
    "Style",
    "Tissue",
    "plan_breakhis",
    "render_he",
    "synth_bach",
    "synth_breakhis",
]
