from rest_framework.routers import DefaultRouter

from . import api
from .api.finetune import PreferenceDatasetViewSet

router = DefaultRouter()
router.register("prompt-sets", api.PromptSetViewSet)
router.register("questions", api.QuestionViewSet)
router.register("models", api.LanguageModelViewSet)
router.register("prompt-templates", api.PromptTemplateViewSet)
router.register("runs", api.GenerationRunViewSet)
router.register("answers", api.AnswerViewSet)
router.register("instruction-datasets", api.InstructionDatasetViewSet)
router.register("finetune-runs", api.FineTuneRunViewSet)
router.register("preference-datasets", PreferenceDatasetViewSet)

urlpatterns = router.urls
