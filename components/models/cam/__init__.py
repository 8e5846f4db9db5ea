"""CAM defect classifier: good/anomaly from one image and a defect box from its class activation map.

``model`` (pure torch), ``heatmap`` (CAM -> boxes, box IoU; numpy), ``data`` (images and masks of the
prepared segmentation split), ``metrics``, ``module`` (Lightning), ``evaluate`` and ``family`` (the
:class:`~components.models.family.ModelFamily`). Import the module you need; this package imports
nothing on its own.
"""
