from django.urls import path
from rest_framework.routers import SimpleRouter

from . import apis, staff_apis

router = SimpleRouter()
router.register("studies", staff_apis.StudyViewSet)

urlpatterns = [
    # Annotator contracts: keep these paths exactly.
    path("studies/<int:study_id>/next/", apis.StudyNextApi.as_view(), name="study-next"),
    path("assignments/<str:token>/vote/", apis.AssignmentVoteApi.as_view(), name="assignment-vote"),
    path("assignments/<str:token>/skip/", apis.AssignmentSkipApi.as_view(), name="assignment-skip"),
    # Staff: the staff home's figures, two studies compared, an annotator's votes left out.
    path("staff/summary/", staff_apis.StaffSummaryApi.as_view(), name="staff-summary"),
    path("staff/runs/", staff_apis.StaffRunsApi.as_view(), name="staff-runs"),
    path("studies/compare/", staff_apis.StudyCompareApi.as_view(), name="studies-compare"),
    path(
        "studies/<int:study_id>/annotators/<int:annotator_id>/exclusion/",
        staff_apis.AnnotatorExclusionApi.as_view(),
        name="annotator-exclusion",
    ),
    # Staff results and exports (a path segment, not ?format=, which DRF reserves).
    path(
        "studies/<int:study_id>/results/",
        staff_apis.StudyResultsApi.as_view(),
        name="study-results",
    ),
    path(
        "studies/<int:study_id>/export/<str:fmt>/",
        staff_apis.StudyExportApi.as_view(),
        name="study-export",
    ),
    *router.urls,
]
