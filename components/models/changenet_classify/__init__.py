"""Visual ChangeNet-Classification: pass/defect from a part's test and golden images under several lights.

``model`` (pure torch), ``losses``, ``metrics``, ``data`` (the Optical Inspection CSV), ``module``
(Lightning), ``evaluate`` and ``family`` (the :class:`~components.models.family.ModelFamily`).
Import the module you need; this package imports nothing on its own.
"""
