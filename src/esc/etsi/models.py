"""Request bodies of the VNF LCM API (SOL003 v2.4.1, API 1.1.1), validated with pydantic.

Only what the VNFM reads is typed; other attributes the standard allows are kept as they
come (``extra="allow"``), so a valid request is never refused for a field this VNFM
does not use. Identifiers are bounded, free text too.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

Ident = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Text = Annotated[str, StringConstraints(max_length=4096)]
KeyValue = dict[str, Any]


class Body(BaseModel):
    model_config = ConfigDict(extra="allow")


class CreateVnfRequest(Body):
    vnfdId: Ident
    vnfInstanceName: Text | None = None
    vnfInstanceDescription: Text | None = None


class ExtCpConfig(Body):
    cpInstanceId: Ident | None = None
    linkPortId: Ident | None = None
    cpProtocolData: list[KeyValue] | None = None


class VnfExtCpData(Body):
    cpdId: Ident
    cpConfig: list[ExtCpConfig] | None = None


class ExtVirtualLinkData(Body):
    id: Ident
    vimConnectionId: Ident | None = None
    resourceProviderId: Ident | None = None
    resourceId: Ident
    extCps: list[VnfExtCpData]
    extLinkPorts: list[KeyValue] | None = None


class VimConnectionInfo(Body):
    id: Ident
    vimId: Ident | None = None
    vimType: Ident
    interfaceInfo: KeyValue | None = None
    accessInfo: KeyValue | None = None
    extra: KeyValue | None = None


class InstantiateVnfRequest(Body):
    flavourId: Ident
    instantiationLevelId: Ident | None = None
    extVirtualLinks: list[ExtVirtualLinkData] | None = Field(default=None, max_length=64)
    extManagedVirtualLinks: list[KeyValue] | None = None
    vimConnectionInfo: list[VimConnectionInfo] | None = None
    localizationLanguage: Text | None = None
    additionalParams: KeyValue | None = None


class ScaleVnfRequest(Body):
    type: Literal["SCALE_OUT", "SCALE_IN"]
    aspectId: Ident
    numberOfSteps: int = Field(default=1, ge=1, le=100)
    additionalParams: KeyValue | None = None


class ScaleInfo(Body):
    aspectId: Ident
    scaleLevel: int = Field(ge=0, le=1000)


class ScaleVnfToLevelRequest(Body):
    instantiationLevelId: Ident | None = None
    scaleInfo: list[ScaleInfo] | None = None
    additionalParams: KeyValue | None = None


class ChangeVnfFlavourRequest(Body):
    newFlavourId: Ident
    instantiationLevelId: Ident | None = None
    extVirtualLinks: list[ExtVirtualLinkData] | None = None
    extManagedVirtualLinks: list[KeyValue] | None = None
    vimConnectionInfo: list[VimConnectionInfo] | None = None
    additionalParams: KeyValue | None = None


class TerminateVnfRequest(Body):
    terminationType: Literal["FORCEFUL", "GRACEFUL"]
    gracefulTerminationTimeout: int | None = Field(default=None, ge=0)
    additionalParams: KeyValue | None = None


class HealVnfRequest(Body):
    cause: Text | None = None
    additionalParams: KeyValue | None = None


class OperateVnfRequest(Body):
    changeStateTo: Literal["STARTED", "STOPPED"]
    stopType: Literal["FORCEFUL", "GRACEFUL"] | None = None
    gracefulStopTimeout: int | None = Field(default=None, ge=0)
    additionalParams: KeyValue | None = None


class ChangeExtVnfConnectivityRequest(Body):
    extVirtualLinks: list[ExtVirtualLinkData] = Field(min_length=1, max_length=64)
    vimConnectionInfo: list[VimConnectionInfo] | None = None
    additionalParams: KeyValue | None = None


class VnfInfoModificationRequest(Body):
    """A JSON merge patch (RFC 7396); vnfPkgId cannot be null: every VNF instance has a package."""

    vnfInstanceName: Text | None = None
    vnfInstanceDescription: Text | None = None
    vnfPkgId: Ident | None = None
    vnfConfigurableProperties: KeyValue | None = None
    metadata: KeyValue | None = None
    extensions: KeyValue | None = None
    vimConnectionInfo: list[VimConnectionInfo] | None = None

    @field_validator("vnfPkgId", mode="before")
    @classmethod
    def _package_stays(cls, value: Any) -> Any:
        if value is None:  # only given: an absent one is the default, not validated
            raise ValueError("null would remove the VNF package, which every VNF instance has")
        return value


class CancelMode(Body):
    cancelMode: Literal["GRACEFUL", "FORCEFUL"]


class VnfProductVersion(Body):
    vnfSoftwareVersion: Ident
    vnfdVersions: list[Ident] | None = None


class VnfProduct(Body):
    vnfProductName: Ident
    versions: list[VnfProductVersion] | None = None


class VnfProductsFromProvider(Body):
    vnfProvider: Ident
    vnfProducts: list[VnfProduct] | None = None


class VnfInstanceSubscriptionFilter(Body):
    vnfdIds: list[Ident] | None = None
    vnfProductsFromProviders: list[VnfProductsFromProvider] | None = None
    vnfInstanceIds: list[Ident] | None = None
    vnfInstanceNames: list[Text] | None = None


NotificationType = Literal["VnfLcmOperationOccurrenceNotification", "VnfIdentifierCreationNotification",
                           "VnfIdentifierDeletionNotification"]
Operation = Literal["INSTANTIATE", "SCALE", "SCALE_TO_LEVEL", "CHANGE_FLAVOUR", "TERMINATE", "HEAL",
                    "OPERATE", "CHANGE_EXT_CONN", "MODIFY_INFO"]
OpState = Literal["STARTING", "PROCESSING", "COMPLETED", "FAILED_TEMP", "FAILED", "ROLLING_BACK",
                  "ROLLED_BACK"]


class LifecycleChangeNotificationsFilter(Body):
    vnfInstanceSubscriptionFilter: VnfInstanceSubscriptionFilter | None = None
    notificationTypes: list[NotificationType] | None = None
    operationTypes: list[Operation] | None = None
    operationStates: list[OpState] | None = None


class ParamsBasic(Body):
    userName: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class ParamsOauth2ClientCredentials(Body):
    clientId: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    clientPassword: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    tokenEndpoint: Annotated[str, StringConstraints(min_length=1, max_length=2048)]


class SubscriptionAuthentication(Body):
    authType: list[Literal["BASIC", "OAUTH2_CLIENT_CREDENTIALS", "TLS_CERT"]] = Field(min_length=1)
    paramsBasic: ParamsBasic | None = None
    paramsOauth2ClientCredentials: ParamsOauth2ClientCredentials | None = None


class LccnSubscriptionRequest(Body):
    filter: LifecycleChangeNotificationsFilter | None = None
    callbackUri: Annotated[str, StringConstraints(min_length=1, max_length=2048)]
    authentication: SubscriptionAuthentication | None = None
