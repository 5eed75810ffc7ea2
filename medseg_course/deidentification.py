"""De-identification of DICOM data sets before they leave the hospital.

``deidentify`` returns a copy of a pydicom data set with the attributes that identify a
patient, an operator or an institution removed or blanked (a subset of DICOM PS3.15's Basic
Application Level Confidentiality Profile), private tags dropped, and UIDs replaced by
``anonymous_uid``, which maps each UID to the same new one every time, so a series still
holds together. ``io.deidentify`` is the same function.
"""

from __future__ import annotations

import copy

__all__ = ["PHI_ATTRIBUTES", "anonymous_uid", "deidentify"]


#: DICOM attributes that identify a patient, an operator or an institution (a subset of
#: DICOM PS3.15's Basic Application Level Confidentiality Profile).
PHI_ATTRIBUTES = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "PatientSex",
    "PatientAge", "PatientAddress", "PatientTelephoneNumbers", "OtherPatientIDs",
    "OtherPatientNames", "OtherPatientIDsSequence", "PatientMotherBirthName",
    "MedicalRecordLocator", "EthnicGroup", "PatientComments", "InstitutionName",
    "InstitutionAddress", "InstitutionalDepartmentName", "ReferringPhysicianName",
    "ReferringPhysicianAddress", "PerformingPhysicianName", "NameOfPhysiciansReadingStudy",
    "OperatorsName", "PhysiciansOfRecord", "RequestingPhysician", "AccessionNumber",
    "StudyID", "StationName", "DeviceSerialNumber", "StudyDate", "SeriesDate",
    "AcquisitionDate", "ContentDate", "StudyTime", "SeriesTime", "AcquisitionTime",
    "ContentTime", "AcquisitionDateTime", "StudyDescription", "RequestedProcedureDescription",
    "ScheduledProcedureStepDescription", "PerformedProcedureStepDescription",
)
# Type 2 attributes must be present (possibly empty) in a valid file: blank them.
_BLANKED = {"PatientName", "PatientID", "PatientBirthDate", "PatientSex", "ReferringPhysicianName",
            "AccessionNumber", "StudyID", "StudyDate", "StudyTime"}


#: UIDs under this root name DICOM's own classes and syntaxes (CT Image Storage, Explicit VR
#: Little Endian, ...): the same for every file, so they identify nobody and are kept.
_STANDARD_UID_ROOT = "1.2.840.10008."


def anonymous_uid(uid):
    """A stand-in for a DICOM UID: ``2.25.`` plus a number derived from the UID by SHA-256.

    The same UID always maps to the same stand-in (slices of a series still group, references
    between files still match), but the original cannot be read back from it. ``2.25.``
    is the DICOM root for UIDs made from a 128-bit number (PS3.5 B.2). Empty stays empty.
    """
    import hashlib  # noqa: PLC0415

    uid = str(uid).strip()
    if not uid:
        return ""
    return "2.25." + str(int.from_bytes(hashlib.sha256(uid.encode()).digest()[:16], "big"))


def deidentify(dataset):
    """A copy of a DICOM dataset without patient-identifying attributes.

    Removes (or blanks, where DICOM requires the attribute) every attribute in
    ``PHI_ATTRIBUTES``, in nested sequences too, and all private tags, which vendors use
    for anything including names, and every date and time. Instance UIDs (study, series,
    image, frame of reference, and the file meta's copy) are replaced by ``anonymous_uid``
    stand-ins, as the basic profile asks, consistently, so slices still group into series;
    DICOM's standard class and syntax UIDs are kept. Pixel data are kept as they are (text
    burned into the pixels is not removed).

    Parameters
    ----------
    dataset : pydicom.Dataset

    Returns
    -------
    pydicom.Dataset
        A new dataset; the input is not modified.
    """
    import pydicom  # noqa: PLC0415

    if not isinstance(dataset, pydicom.Dataset):
        raise ValueError(f"dataset must be a pydicom.Dataset. Received: {type(dataset).__name__}")
    clean = copy.deepcopy(dataset)

    def replace_uids(ds):
        for element in ds:
            if element.VR == "UI" and element.value:
                values = [element.value] if isinstance(element.value, str) else list(element.value)
                new = [v if str(v).startswith(_STANDARD_UID_ROOT) else anonymous_uid(v) for v in values]
                element.value = new if len(new) > 1 else new[0]

    def scrub(ds):
        ds.remove_private_tags()
        for name in PHI_ATTRIBUTES:
            if name in ds:
                if name in _BLANKED:
                    ds[name].value = ""
                else:
                    delattr(ds, name)
        # every date and time too (the profile without its "retain longitudinal temporal
        # information" option): InstanceCreationDate and the like date the visit as well
        for element in list(ds):
            if element.VR in ("DA", "DT", "TM"):
                if element.keyword in _BLANKED:
                    element.value = ""
                else:
                    del ds[element.tag]
        replace_uids(ds)
        for element in ds:
            if element.VR == "SQ":
                for item in element.value:
                    scrub(item)

    scrub(clean)
    if getattr(clean, "file_meta", None) is not None:
        replace_uids(clean.file_meta)
    clean.PatientIdentityRemoved = "YES"
    return clean
