"""Run a saved model on photos or composite pairs (thin wrapper of ``pspnet-predict``).

    python scripts/predict.py --model runs/demo-fast-classes/best.keras --input photo.jpg --out predictions/
    python scripts/predict.py --model runs/demo-fast-classes/best.keras \
        --input ../shared/data/cityscapes_data/val --out predictions/ --with-truth

Writes NAME_color.png, NAME_overlay.png, NAME_ids.png (and NAME_panel.png with
--with-truth) per image to --out. An image twice as wide as high is read as a
photo|label composite (--pairs never for plain wide photos).
"""

import sys

from pspnet.cli import predict_main

if __name__ == "__main__":
    sys.exit(predict_main())
