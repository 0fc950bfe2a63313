from django.urls import path
from rest_framework.routers import SimpleRouter

from . import apis

router = SimpleRouter()
router.register("studies", apis.StudyViewSet)

urlpatterns = [
    # Annotator contracts: keep these paths exactly.
    path("studies/<int:study_id>/next/", apis.StudyNextApi.as_view(), name="study-next"),
    path("assignments/<str:token>/vote/", apis.AssignmentVoteApi.as_view(), name="assignment-vote"),
    # Staff results and exports (a path segment, not ?format=, which DRF reserves).
    path("studies/<int:study_id>/results/", apis.StudyResultsApi.as_view(), name="study-results"),
    path(
        "studies/<int:study_id>/export/<str:fmt>/",
        apis.StudyExportApi.as_view(),
        name="study-export",
    ),
    *router.urls,
]
